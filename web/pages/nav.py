"""The navigation bar: each workspace module registers its entries (path, label, the roles
that see it, and optionally a count of waiting work); the bar shows a person the entries of
their role, and ``GET /nav/counts`` renders the counts (loaded by htmx after the page, and
again whenever the page's live stream says they changed), so a page never waits for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.people import CurrentPerson, Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

# A count of waiting work at `now`: the app's clock (core.clock) in the centre's time zone,
# so that a count that depends on time (a window, a deadline, the local date) agrees with
# the pages, which read the same clock, and with tests that move it.
Counter = Callable[[Session, Person, datetime], int]


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # a message id (translated where shown)
    roles: frozenset[Role]
    order: int = 50
    count: Counter | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return self.path.strip("/").replace("/", "-") or "home"


_ITEMS: list[NavItem] = []


def register(*items: NavItem) -> None:
    for item in items:
        if any(existing.path == item.path for existing in _ITEMS):
            raise ValueError(f"two navigation entries for {item.path}")
        _ITEMS.append(item)
    _ITEMS.sort(key=lambda i: (i.order, i.path))


def items_for(person: Person | None) -> list[NavItem]:
    if person is None:
        return []
    return [item for item in _ITEMS if person.role in item.roles]


@router.get("/nav/counts")
def counts(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    """The waiting work behind each of the person's entries, as out-of-band swaps."""
    now = clock.now().astimezone(settings.tz)
    values = {
        item.key: item.count(session, person, now) for item in items_for(person) if item.count
    }
    return render(request, "nav_counts.html", {"counts": values})
