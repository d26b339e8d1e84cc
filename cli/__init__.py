"""The `hotline` command and the process supervisor: the only place that knows how the web,
SIP edge, worker and beat processes are started."""
