"""`hotline report monthly`: each unit's monthly report (hotline.figures.monthly) written
under the data dir and, with --send, e-mailed to its heads now — the same rows and the same
once-only rule as the scheduled run on the 1st, so a report already sent is not sent again."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.admin import BROKER_TIMEOUT_S
from cli.common import fail, friendly_errors
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from core.settings import get_settings

report_app = typer.Typer(help="Reports: the units' monthly report.", no_args_is_help=True)


@report_app.command("monthly")
@friendly_errors
def report_monthly(
    month: Annotated[
        str | None, typer.Option(help="YYYY-MM; default: last month in the centre's time")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="one unit's code; default: every unit")] = None,
    send: Annotated[bool, typer.Option(help="e-mail it to the unit's heads now")] = False,
) -> None:
    """Write each unit's XLSX for the month (and with --send e-mail it to its heads)."""
    from dispatch import notify
    from dispatch.models import NotificationStatus
    from hotline.figures import monthly

    settings = get_settings()
    if send and not settings.smtp.host:
        fail("--send needs SMTP: set HOTLINE_SMTP__HOST (and the sender, HOTLINE_SMTP__SENDER)")
    now = SystemClock().now()
    factory = make_session_factory(make_engine(settings.db_url))
    reports = monthly.monthly_reports(
        factory,
        settings=settings,
        month=monthly.parse_month(month) if month else monthly.previous_month(now, settings.tz),
        now=now,
        unit_code=unit,
        send=send,
    )
    failed = 0
    for report in reports:
        if report.error is not None:
            typer.secho(f"{report.unit_code}: failed: {report.error}", fg=typer.colors.RED)
            failed += 1
            continue
        typer.echo(f"{report.unit_code}: {report.path}")
        if not send:
            continue
        if not report.recipients:
            typer.echo("  no head with an e-mail address: not sent")
        for address in report.already:
            typer.echo(f"  {address}: sent before, not again")
        for ident in report.notification_ids:
            status = notify.deliver(factory, notification_id=ident, now=now, settings=settings)
            typer.echo(f"  notification {ident}: {status.value}")
            if status is NotificationStatus.pending:
                typer.echo(f"  {_retry_by_worker(ident)}")
            failed += status is not NotificationStatus.sent
    if failed:
        fail(f"{failed} report(s) or e-mail(s) failed; see above")


def _retry_by_worker(notification_id: int) -> str:
    """A delivery that may succeed later goes to the worker, which retries with backoff;
    one short try at the broker, as `hotline sweep` does."""
    from hotline.worker import make_app

    celery_app = make_app(get_settings())
    celery_app.conf.broker_connection_timeout = BROKER_TIMEOUT_S
    try:
        celery_app.send_task("dispatch.deliver_notification", args=[notification_id], retry=False)
    except Exception as exc:  # the broker is down: say so, the row keeps the e-mail
        return f"not queued for retry ({type(exc).__name__}); the e-mail stays pending"
    return "queued: the worker retries it"
