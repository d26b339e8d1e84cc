"""The `hotline` command: migrations, the embedded all-in-one `run`, the production
processes (web, worker, beat, sip) and administration (users, rules, prompts, a manual SLA
sweep). The process commands are in `cli.processes`, the administration in `cli.admin`;
this module puts them together in the order `hotline --help` lists them.

Domain modules are imported inside the commands that need them, so that `hotline db upgrade`
works on a host where, say, the web stack is broken, and `--help` stays fast.
"""

from __future__ import annotations

from cli.admin import db_app, prompts_app, rules_app, sla_app, users_app
from cli.common import Hotline, preflight
from cli.doctor import doctor_app
from cli.metrics import metrics_app
from cli.open311 import open311_app
from cli.processes import processes_app
from cli.report import report_app
from cli.seats import seats_app
from cli.sip_process import sip  # noqa: F401 - registers `hotline sip` on processes_app

app = Hotline(
    help="12345 government service hotline platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.callback()(preflight)  # commands on the centre's data need its database: cli.common
app.add_typer(processes_app)  # run, web, worker, beat, sip
app.add_typer(sla_app)  # sweep
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(rules_app, name="rules")
app.add_typer(prompts_app, name="prompts")
app.add_typer(seats_app, name="seats")
app.add_typer(report_app, name="report")
app.add_typer(open311_app, name="open311")
app.add_typer(metrics_app)  # metrics (the exporter of worker and SIP hosts)
app.add_typer(doctor_app)  # doctor
