"""`hotline open311 client`: the applications that may file Open311 requests (add, list,
revoke). A key is printed once, when it is issued: only its SHA-256 is stored."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from cli.common import _print_table, _session, friendly_errors
from core.clock import SystemClock
from core.settings import get_settings

open311_app = typer.Typer(help="Open311 GeoReport v2: client applications.", no_args_is_help=True)
client_app = typer.Typer(help="Client applications and their API keys.", no_args_is_help=True)
open311_app.add_typer(client_app, name="client")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@client_app.command("add")
@friendly_errors
def client_add(
    name: Annotated[str, typer.Argument(help="the application, e.g. '市民 App'")],
) -> None:
    """Register an application and print its API key, once."""
    from hotline.open311 import clients

    with _session(get_settings()) as session:
        client, key = clients.issue(session, name=name, actor=_actor(), now=SystemClock().now())
        ident = client.id
    typer.echo(f"client {ident} ({name}) registered")
    typer.echo(f"api_key: {key}")
    typer.echo("It is shown only now; a lost key is replaced by registering the client again.")


@client_app.command("list")
@friendly_errors
def client_list() -> None:
    """Every client application, revoked ones included."""
    from hotline.open311 import clients

    with _session(get_settings()) as session:
        found = clients.list_clients(session)
        rows = [("ID", "NAME", "ISSUED", "BY", "REVOKED")]
        for c in found:
            rows.append(
                (
                    str(c.id),
                    c.name,
                    c.created_at.strftime("%Y-%m-%d %H:%M:%SZ"),
                    c.created_by,
                    c.revoked_at.strftime("%Y-%m-%d %H:%M:%SZ") if c.revoked_at else "",
                )
            )
    if len(rows) == 1:
        typer.echo("no client applications yet: `hotline open311 client add NAME`")
        return
    _print_table(rows)


@client_app.command("revoke")
@friendly_errors
def client_revoke(client_id: Annotated[int, typer.Argument(help="the client's ID")]) -> None:
    """Refuse the client's key from now on (403)."""
    from hotline.open311 import clients

    with _session(get_settings()) as session:
        client = clients.revoke(
            session, client_id=client_id, actor=_actor(), now=SystemClock().now()
        )
        name = client.name
    typer.echo(f"client {client_id} ({name}) revoked: its key is refused from now on")
