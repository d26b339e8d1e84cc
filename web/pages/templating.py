"""Jinja2 for the pages: templates in ``web/templates``, rendered whole or one block at a time
(jinja2-fragments: an htmx request gets only the block it swaps), with the person's language
(``web.pages.i18n``), the centre's time zone and the vendored assets' URLs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.responses import Response

from web.pages import i18n
from web.pages.labels import ROLE_NAMES, SATISFACTION_NAMES, STATUS_NAMES, reason_text

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
    undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not an empty cell
)
templates = Jinja2Blocks(env=env)
env.install_gettext_callables(  # type: ignore[attr-defined]
    gettext=lambda message: i18n.catalogue(i18n.current_locale()).gettext(message),
    ngettext=lambda s, p, n: i18n.catalogue(i18n.current_locale()).ngettext(s, p, n),
    newstyle=True,
)


def _vendor_url(name: str) -> str:
    from web.assets import vendor_url

    return vendor_url(name)


def _nav_items(person: Any) -> list[Any]:
    from web.pages.nav import items_for

    return items_for(person)


def local_time(value: datetime | None, request: Request, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored (UTC) time in the centre's time zone."""
    if value is None:
        return ""
    zone = ZoneInfo(request.app.state.settings.timezone)
    return value.astimezone(zone).strftime(fmt)


env.globals.update(
    vendor_url=_vendor_url,
    nav_items=lambda person: _nav_items(person),
    role_names=ROLE_NAMES,
    status_label=lambda status: STATUS_NAMES[status],
    satisfaction_label=lambda value: SATISFACTION_NAMES[value],
    # a system reason translated; a person's reason (their own words) as written
    event_reason=lambda reason: i18n.gettext(text) if (text := reason_text(reason)) else "",
    language_names=i18n.LANGUAGE_NAMES,
    locales=i18n.LOCALES,
    current_locale=i18n.current_locale,
)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    block: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The page ``name`` (or only its ``block``) with the request's person, CSRF token and
    flash message in its context."""
    state = request.state
    ctx: dict[str, Any] = {
        "person": getattr(state, "person", None),
        "csrf_token": getattr(state, "csrf_token", ""),
        "locale": i18n.current_locale(),
        "lt": lambda value, fmt="%Y-%m-%d %H:%M": local_time(value, request, fmt),
        **(context or {}),
    }
    kwargs: dict[str, Any] = {"status_code": status_code, "headers": headers}
    if block is not None:
        kwargs["block_name"] = block
    response: Response = templates.TemplateResponse(request, name, ctx, **kwargs)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
