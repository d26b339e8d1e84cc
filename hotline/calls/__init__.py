"""Phone calls into the ticket platform.

- `setup`: the recognizer, prompts and flow settings the SIP edge runs on, from the settings;
- `services`: `CallServices`, the hooks the edge's call flows run, finishing calls in a pool;
- `intake`: a call becomes a ticket (at answer), its transcript attached when the report ends;
- `hints`: the five elements a transcript hints at, and the ticket description;
- `records`: the call record (CDR) and the queries that read calls back;
- `partials`: live partial transcripts written from a thread of their own;
- `status_line`: a caller keys in a ticket number and hears where it stands;
- `callbacks`: satisfaction callbacks (回访) due, claimed and their outcomes recorded;
- `dialer`: the SIP process's loop that places the callbacks and runs the survey.
"""
