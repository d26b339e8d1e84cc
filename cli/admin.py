"""The `hotline` administration commands: database migrations (`db`), accounts (`users`),
rule packs (`rules`), voice prompts (`prompts`) and a manual SLA `sweep`.

Domain modules are imported inside the commands that need them, so that `hotline db upgrade`
works on a host where, say, the web stack is broken, and `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import _print_table, _safe_url, _session, fail, friendly_errors
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from core.settings import get_settings
from hotline import migrate

if TYPE_CHECKING:
    from dispatch.rule_specs import PackFormat

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts and their bearer tokens.", no_args_is_help=True)
rules_app = typer.Typer(help="Dispatch rule packs.", no_args_is_help=True)
prompts_app = typer.Typer(help="Voice prompts of the phone menus.", no_args_is_help=True)
# Added to the `hotline` app without a name: `sweep` is a top-level command.
sla_app = typer.Typer()
# `hotline sweep` tries the broker once, this long, rather than kombu's retries (~50 s).
BROKER_TIMEOUT_S = 3


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply the migrations to the configured database (HOTLINE_DATABASE_URL)."""
    settings = get_settings()
    migrate.upgrade(settings.db_url, revision)
    typer.echo(f"{_safe_url(settings.db_url)} is at revision {migrate.current(settings.db_url)}")


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Show the database's revision and whether it is up to date."""
    settings = get_settings()
    current, head = migrate.current(settings.db_url), migrate.head()
    state = "up to date" if current == head else f"behind head {head}: run `hotline db upgrade`"
    typer.echo(f"{_safe_url(settings.db_url)}: revision {current or '(none)'} — {state}")


@db_app.command("revision")
@friendly_errors
def db_revision(
    message: Annotated[str, typer.Argument(help="what the migration does, e.g. 'add unit phone'")],
) -> None:
    """Developers: autogenerate the next migration from the models.

    The models are compared with a scratch SQLite database brought to head; review the
    generated file before committing it.
    """
    path = migrate.revision(message)
    typer.echo(f"wrote {path}; review it, then run the migration tests")


# ---------------------------------------------------------------- prompts


@prompts_app.command("build")
@friendly_errors
def prompts_build(
    language: Annotated[
        str | None, typer.Option(help="default: HOTLINE_TELEPHONY__PROMPT_LANGUAGE")
    ] = None,
) -> None:
    """Synthesise the voice prompts that are missing or whose text changed."""
    from hotline.calls import setup
    from telephony.prompts import PromptError

    settings = get_settings()
    try:
        prompts = setup.prompt_set(settings, language=language)
        made = prompts.ensure()
    except PromptError as exc:
        fail(str(exc))
    typer.echo(
        f"{len(made)} prompt(s) generated in {prompts.directory}; "
        f"{len(prompts.texts) - len(made)} already up to date"
    )


# ---------------------------------------------------------------- users


@users_app.command("add")
@friendly_errors
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="operator|dispatcher|supervisor|handler|admin")],
    unit: Annotated[str | None, typer.Option(help="unit code (required for handlers)")] = None,
    name: Annotated[str | None, typer.Option(help="display name (default: USERNAME)")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    head: Annotated[bool, typer.Option("--head", help="the unit's head (gets 督办)")] = False,
    machine: Annotated[
        bool, typer.Option("--machine", help="an account for a machine: a token, no password")
    ] = False,
) -> None:
    """Create an account and print its first password (for the pages; the person changes it
    at the first sign-in) and its API bearer token — once; only hashes are stored."""
    from accounts.models import Role
    from dispatch import units as unit_service

    try:
        role_value = Role(role)
    except ValueError:
        fail(f"unknown role {role!r}; one of: {', '.join(r.value for r in Role)}")
    settings = get_settings()
    with _session(settings) as session:
        user, token = unit_service.create_user(
            session,
            username=username,
            display_name=name or username,
            role=role_value,
            unit_code=unit,
            email=email,
            is_head=head,
            now=SystemClock().now(),
        )
        password = None
        if not machine:
            from accounts.signin import new_password, set_password

            password = new_password()
            assert user.id is not None
            set_password(
                session,
                user_id=user.id,
                password=password,
                now=SystemClock().now(),
                must_change=True,
            )
    typer.echo(f"created {user.username} ({user.role.value}{', ' + unit if unit else ''})")
    if password:
        typer.echo(f"password: {password}   (to sign in to the pages; changed at first sign-in)")
    typer.echo(f"token:    {token}   (API bearer token, for machines)")
    typer.echo("Store them now: they are not shown again (only hashes are kept).")


@users_app.command("password")
@friendly_errors
def users_password(username: str) -> None:
    """Reset a person's password: a new one is printed once, to be changed at the next
    sign-in; their sessions end and a lock-out is lifted."""
    from accounts.signin import new_password, set_password

    settings = get_settings()
    password = new_password()
    with _session(settings) as session:
        user = _user_named(session, username)
        assert user.id is not None
        set_password(
            session, user_id=user.id, password=password, now=SystemClock().now(), must_change=True
        )
    typer.echo(f"password of {username}: {password}")
    typer.echo("They choose their own at the next sign-in; their sessions have ended.")


@users_app.command("unlock")
@friendly_errors
def users_unlock(username: str) -> None:
    """Lift a lock-out after too many failed sign-ins."""
    from accounts.signin import unlock

    settings = get_settings()
    with _session(settings) as session:
        user = _user_named(session, username)
        assert user.id is not None
        unlock(session, user_id=user.id)
    typer.echo(f"{username} can sign in again")


def _user_named(session, username: str):
    from sqlalchemy import select
    from sqlmodel import col

    from accounts.models import User

    user = session.scalars(select(User).where(col(User.username) == username)).first()
    if user is None:
        fail(f"no user {username!r}; `hotline users list` shows them")
    return user


@users_app.command("list")
@friendly_errors
def users_list() -> None:
    """Every account, with role, unit and state."""
    from dispatch import units as unit_service

    settings = get_settings()
    with _session(settings) as session:
        users = unit_service.list_users(session)
        units = unit_service.units_by_id(session, [u.unit_id for u in users])
        rows = [
            (
                u.username,
                u.role.value,
                units[u.unit_id].code if u.unit_id else "",
                "head" if u.is_head else "",
                "active" if u.active else "inactive",
                u.display_name,
            )
            for u in users
        ]
    if not rows:
        typer.echo("no users yet: `hotline users add USERNAME --role admin`")
    _print_table(rows)


# ---------------------------------------------------------------- rules


def _format_of(path: Path) -> PackFormat:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    fail(f"{path}: cannot tell the format from the extension; use .yaml, .yml or .json")


def _pack_format(name: str) -> PackFormat:
    if name == "yaml":
        return "yaml"
    if name == "json":
        return "json"
    fail("--format must be yaml or json")


@rules_app.command("import")
@friendly_errors
def rules_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    replace: Annotated[bool, typer.Option(help="replace the rules of the pack(s) in FILE")] = False,
) -> None:
    """Load a rule pack (YAML or JSON)."""
    from dispatch import rulebook

    fmt = _format_of(file)
    settings = get_settings()
    with _session(settings) as session:
        result = rulebook.import_pack(
            session, text=file.read_text("utf-8"), fmt=fmt, now=SystemClock().now(), replace=replace
        )
    typer.echo(f"imported {file}")
    if result is not None:
        _print_json(result)


@rules_app.command("export")
@friendly_errors
def rules_export(
    pack: Annotated[str | None, typer.Option(help="only this pack (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print the rules as a pack that `hotline rules import` reads back."""
    from dispatch import rulebook

    pack_format = _pack_format(fmt)
    settings = get_settings()
    with _session(settings) as session:
        text = rulebook.export_pack(session, pack=pack, fmt=pack_format)
    typer.echo(text.rstrip("\n"))


@rules_app.command("dry-run")
@friendly_errors
def rules_dry_run(
    text: Annotated[str, typer.Argument(help="what the caller said or wrote")],
    district: Annotated[str | None, typer.Option(help="e.g. 榆阳区")] = None,
    request_type: Annotated[str | None, typer.Option("--type", help="complaint, help, …")] = None,
) -> None:
    """Show which rules would fire for a ticket, and why, without creating anything."""
    from dispatch import rulebook
    from dispatch.rule_matching import TicketFacts
    from tickets.models import RequestType

    try:
        kind = RequestType(request_type) if request_type else None
    except ValueError:
        fail(
            f"unknown request type {request_type!r}; one of: "
            f"{', '.join(t.value for t in RequestType)}"
        )
    settings = get_settings()
    with _session(settings) as session:
        outcome = rulebook.dry_run(
            session, facts=TicketFacts(text=text, district=district, request_type=kind)
        )
    _print_json(outcome)


# ---------------------------------------------------------------- SLA


@sla_app.command("sweep")
@friendly_errors
def sweep() -> None:
    """Run one SLA sweep now: fire every warning and escalation that is due.

    With the broker unreachable the steps still fire and their e-mails and webhooks stay
    pending in the database (the `requeue-notifications` beat task queues them once the
    broker is back); the command says so and exits 1, after one short connection try."""
    from dispatch import escalation
    from hotline.worker import make_app

    settings = get_settings()
    celery_app = make_app(settings)
    celery_app.conf.broker_connection_timeout = BROKER_TIMEOUT_S
    queued: list[int] = []
    unqueued: list[int] = []
    broker_error: list[str] = []

    def enqueue(notification_id: int) -> None:
        if broker_error:  # found down already: do not wait on it once per notification
            unqueued.append(notification_id)
            return
        try:
            # no publish retries: kombu's default policy waits tens of seconds on a dead broker
            celery_app.send_task(
                "dispatch.deliver_notification", args=[notification_id], retry=False
            )
        except Exception as exc:  # kombu's OperationalError, or an OSError under it
            broker_error.append(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
            unqueued.append(notification_id)
        else:
            queued.append(notification_id)

    engine = make_engine(settings.db_url)
    try:
        result = escalation.sweep(
            make_session_factory(engine),
            now=SystemClock().now(),
            batch=settings.sla.sweep_batch,
            enqueue=enqueue,
            settings=settings,
        )
    finally:
        engine.dispose()
    typer.echo(
        f"fired {result.fired} escalation step(s) on {result.assignments} assignment(s);"
        f" {len(queued)} e-mail/webhook delivery(ies) queued for the workers"
        + (
            f"; {result.failed} failed (see the log; the next sweep retries)"
            if result.failed
            else ""
        )
    )
    if broker_error:
        fail(
            f"the broker {_safe_url(settings.broker)} is unreachable ({broker_error[0]}):"
            f" {len(unqueued)} e-mail/webhook delivery(ies) were not queued. They stay pending"
            " and nothing is lost: once the broker is back, the workers' beat task"
            " `requeue-notifications` queues them within minutes."
        )
    if result.failed:
        raise typer.Exit(1)
