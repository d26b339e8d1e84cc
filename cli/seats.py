"""`hotline seats`: the SIP extensions operators' phones register with (add, list, a new
password, disable). A seat's password is printed once, when it is made or reset: only its
digest hashes are stored, so nobody can read it back — a lost one is reset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import _print_table, _session, friendly_errors
from core.clock import SystemClock
from core.settings import get_settings

if TYPE_CHECKING:
    from hotline.calls.seats import SeatView

seats_app = typer.Typer(help="Operator seats: SIP extensions for phones.", no_args_is_help=True)


@seats_app.command("add")
@friendly_errors
def seats_add(
    extension: Annotated[str, typer.Argument(help="2 to 16 digits, e.g. 1001")],
    name: Annotated[str, typer.Option(help="who or where, e.g. 'desk 3'")] = "",
) -> None:
    """Create a seat and print its password, once: set it in the phone's SIP account."""
    from hotline.calls.seats import create_seat

    settings = get_settings()
    with _session(settings) as session:
        seat, password = create_seat(
            session=session,
            extension=extension,
            display_name=name,
            realm=settings.acd.realm,
            now=SystemClock().now(),
        )
    typer.echo(f"seat {seat.extension} created; realm {seat.realm}")
    typer.echo(f"password: {password}")
    typer.echo("It is shown only now; `hotline seats password` makes a new one.")


@seats_app.command("list")
@friendly_errors
def seats_list() -> None:
    """Every seat, whether a phone is registered with it, and from where."""
    from hotline.calls.seats import list_seats

    settings = get_settings()
    with _session(settings) as session:
        seats = list_seats(session=session, now=SystemClock().now())
    if not seats:
        typer.echo("no seats yet: `hotline seats add 1001 --name 'desk 1'`")
        return
    rows = [("EXTENSION", "NAME", "STATE", "PHONE", "FROM", "UNTIL")]
    for seat in seats:
        rows.append(
            (
                seat.extension,
                seat.display_name,
                _state(seat, settings.acd.realm),
                seat.user_agent or "",
                seat.received or "",
                seat.expires_at.strftime("%Y-%m-%d %H:%M:%SZ") if seat.expires_at else "",
            )
        )
    _print_table(rows)


def _state(seat: SeatView, realm: str) -> str:
    if not seat.enabled:
        return "disabled"
    if seat.realm != realm:  # made under another realm: every digest fails
        return "new-password-needed"
    return "registered" if seat.registered else "offline"


@seats_app.command("password")
@friendly_errors
def seats_password(extension: str) -> None:
    """A new password for the seat (enabled again if it was disabled); its phones must be
    given it, their registrations end now."""
    from hotline.calls.seats import reset_password

    settings = get_settings()
    with _session(settings) as session:
        password = reset_password(session=session, extension=extension, realm=settings.acd.realm)
    typer.echo(f"password of seat {extension}: {password}")


@seats_app.command("disable")
@friendly_errors
def seats_disable(extension: str) -> None:
    """No phone may register with the seat any more; its registrations end now."""
    from hotline.calls.seats import disable_seat

    settings = get_settings()
    with _session(settings) as session:
        disable_seat(session=session, extension=extension)
    typer.echo(f"seat {extension} disabled")
