"""Live updates for the pages: ONE Server-Sent Events stream per browser tab, carrying every
topic the page shows, resumable with ``Last-Event-ID``.

    GET /live?topics=tickets,ticket-42,escalations

Each web process reads what changed (``hotline.live``: ticket events and escalations, in id
order) once every ``POLL_S`` for all its open tabs, and hands each tab the changes it may see
(a handler: their unit's tickets only) on the topics it asked for:

    tickets        any visible ticket changed      data: {"ticket_id", "number", "action", "status"}
    ticket-<id>    that ticket changed             data: the same
    escalations    an escalation fired             data: the same, action = its kind
    calls          a call began, was answered, ended or got its ticket (centre staff only)
    agents         an operator's state changed (centre staff only; no data: re-read them)
    call-<key>     a call's live transcript grew   data: {"seq", "text"}  (<key>: call_key())
    nav            the waiting-work counts may have changed (after any change; no data)
    hello          first message: the stream's resume point
    reset          more was missed than can be replayed: reload the page
    signed-out     the session ended: the page goes to the sign-in

Every message carries the resume point as its id (``t<ticket event>.e<escalation>``). A tab
that reconnects — to this process or any other — is first replayed every change after the
id it sends (header ``Last-Event-ID``, or ``?last_event_id=`` when the page's script has to
open a new EventSource), so nothing is lost across a reconnect; a change may arrive twice,
and the pages treat every event as "refresh this part" (idempotent).

The first connect resumes too. A page is read at one moment and its stream joins the feed
a moment later (the browser parses, loads htmx, opens the EventSource); a change committed
in between is after the page's data but before the tab's first resume point, and the page
would stay stale until the next change. So ``PagePosition`` notes where the feed stood
before the page's own queries ran, base.html puts it in the connect URL
(``?last_event_id=``), and the stream replays from there. A reconnect's Last-Event-ID
header still wins over it: it is newer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from accounts import agents as agent_states
from accounts.models import CENTRE_ROLES
from accounts.signin import resume_session
from core.db import session_scope
from hotline import live
from web.pages.people import SESSION_COOKIE, SignInRequired, policy

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

POLL_S = 0.25
HEARTBEAT_S = 15.0
SESSION_CHECK_S = 60.0
QUEUE_MAX = 2000  # a tab this far behind is cut off and resumes from the database
REPLAY_MAX = live.BATCH
TOPIC = re.compile(r"^(tickets|escalations|calls|agents|ticket-\d{1,18})$")
CALLS_ENDED_WITHIN = live.CALLS_ENDED_WITHIN


@dataclass(frozen=True)
class Position:
    ticket: int
    escalation: int

    def encode(self) -> str:
        return f"t{self.ticket}.e{self.escalation}"

    @classmethod
    def decode(cls, text: str | None) -> Position | None:
        match = re.fullmatch(r"t(\d{1,18})\.e(\d{1,18})", (text or "").strip())
        return cls(int(match[1]), int(match[2])) if match else None


@dataclass(eq=False)
class Tab:
    """One open stream."""

    sees_all: bool
    unit_id: int | None
    topics: frozenset[str]
    # (a change, or None for "nav", or a ready message about calls; the resume point)
    queue: asyncio.Queue[tuple[live.Change | str | None, Position]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX)
    )
    overflowed: bool = False

    def may_see(self, change: live.Change) -> bool:
        return self.sees_all or (self.unit_id is not None and self.unit_id in change.unit_ids)

    def messages(self, change: live.Change, position: Position) -> list[str]:
        data = {
            "ticket_id": change.ticket_id,
            "number": change.number,
            "action": change.action,
            "status": change.status,
        }
        names = [f"ticket-{change.ticket_id}"]
        names.append("tickets" if change.kind == "ticket" else "escalations")
        return [sse(name, data, position) for name in names if name in self.topics]


call_key = live.call_key


def sse(event: str, data: object | None, position: Position | None) -> str:
    head = f"id: {position.encode()}\n" if position is not None else ""
    body = json.dumps(data, ensure_ascii=False) if data is not None else ""
    return f"{head}event: {event}\ndata: {body}\n\n"


class Feed:
    """The process's reader of changes, running while at least one tab is open."""

    def __init__(self, session_factory, clock=None) -> None:
        self._factory = session_factory
        self.tabs: set[Tab] = set()
        self._task: asyncio.Task[None] | None = None
        self._tickets = live.Cursor()
        self._escalations = live.Cursor()
        self.position = Position(0, 0)
        self.started = False
        self._calls: dict[str, tuple[object, ...]] = {}
        self._agents: int | None = None  # accounts.agents.revision as last read
        self._clock = clock

    async def join(self, tab: Tab) -> Position:
        """Add ``tab``; the resume point it starts from (changes after it will reach it)."""
        if not self.started:
            t, e = await run_in_threadpool(self._latest)
            self._tickets, self._escalations = live.Cursor(low=t), live.Cursor(low=e)
            self.position, self.started = Position(t, e), True
        self.tabs.add(tab)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="live-feed")
        return self.position

    def leave(self, tab: Tab) -> None:
        self.tabs.discard(tab)

    def _latest(self) -> tuple[int, int]:
        with session_scope(self._factory) as session:
            return live.latest_ids(session)

    def _read(
        self, after: Position, calls: bool, agents: bool = False
    ) -> tuple[list[live.Change], list[live.Change], list[live.LiveCall] | None, int | None]:
        with session_scope(self._factory) as session:
            return (
                live.ticket_changes(session, after=after.ticket),
                live.escalation_changes(session, after=after.escalation),
                live.live_calls(session, now=self._clock.now(), ended_within=CALLS_ENDED_WITHIN)
                if calls and self._clock is not None
                else None,
                agent_states.revision(session) if agents else None,
            )

    async def _run(self) -> None:
        while self.tabs:
            try:
                await self.poll()
            except Exception:  # the database away: keep the tabs, try again
                log.exception("reading the live changes failed")
            await asyncio.sleep(POLL_S)
        self._task = None

    async def poll(self) -> None:
        watch_calls = any("calls" in tab.topics and tab.sees_all for tab in self.tabs)
        watch_agents = any("agents" in tab.topics and tab.sees_all for tab in self.tabs)
        tickets, escalations, calls, agents = await run_in_threadpool(
            self._read,
            Position(self._tickets.low, self._escalations.low),
            watch_calls,
            watch_agents,
        )
        if calls is not None:
            self._calls_changed(calls)
        self._agents_changed(agents)
        now, wait = time.monotonic(), live.GAP_WAIT.total_seconds()
        fresh_t = set(self._tickets.accept((c.id for c in tickets), now=now, gap_wait_s=wait))
        fresh_e = set(
            self._escalations.accept((c.id for c in escalations), now=now, gap_wait_s=wait)
        )
        self.position = Position(self._tickets.low, self._escalations.low)
        changes = [c for c in tickets if c.id in fresh_t] + [
            c for c in escalations if c.id in fresh_e
        ]
        for change in changes:
            self._send(change)
        if changes:
            self._send(None)  # "nav": counts may have changed

    def _calls_changed(self, calls: list[live.LiveCall]) -> None:
        """Tell the consoles what changed since the last look: the list, and each call whose
        live transcript grew (its text as it is now: a missed one is made up by the next)."""
        now = {c.call_id: c for c in calls}
        listed = {
            key: (c.answered_at, c.ended_at, c.ticket_id, c.control_seq) for key, c in now.items()
        }
        before = {key: value[:4] for key, value in self._calls.items()}
        messages: list[str] = []
        if listed != before:
            messages.append(sse("calls", None, None))
        for key, c in now.items():
            if c.live_seq and (key not in self._calls or self._calls[key][4] != c.live_seq):
                messages.append(
                    sse(f"call-{call_key(key)}", {"seq": c.live_seq, "text": c.live_text}, None)
                )
        self._calls = {key: (*listed[key], c.live_seq) for key, c in now.items()}
        for tab in list(self.tabs):
            if "calls" not in tab.topics or not tab.sees_all:
                continue
            for message in messages:
                try:
                    tab.queue.put_nowait((message, self.position))
                except asyncio.QueueFull:
                    tab.overflowed = True

    def _agents_changed(self, latest: int | None) -> None:
        """Tell the centre's tabs that an operator's state changed (the agent panel and, later,
        the wallboard re-read them). The first look tells them too: a move may have come
        between a tab's first read and this feed's."""
        seen, self._agents = self._agents, latest
        if latest is None or latest == seen:
            return
        message = sse("agents", None, None)
        for tab in list(self.tabs):
            if "agents" in tab.topics and tab.sees_all:
                try:
                    tab.queue.put_nowait((message, self.position))
                except asyncio.QueueFull:
                    tab.overflowed = True

    def _send(self, change: live.Change | None) -> None:
        for tab in list(self.tabs):
            if change is not None and not tab.may_see(change):
                continue
            try:
                tab.queue.put_nowait((change, self.position))
            except asyncio.QueueFull:
                tab.overflowed = True


# Requests that never render a page with a stream: no position is read for them.
NOT_PAGES = ("/live", "/static/", "/api/", "/nav/", "/health", "/ready", "/docs", "/openapi")


class PagePosition:
    """Notes the feed's position (``request.state.live_position``, encoded; "" when not
    read) before a signed-in person's page is read, for base.html's connect URL.

    Only full page loads need it: a GET with the session cookie that is not an htmx
    request (those swap a part of a page whose stream is already open) nor one of
    ``NOT_PAGES``. Read in a session of its own and before the route runs, so everything the
    page shows is at or after it — replaying from an older point only repeats changes,
    which the pages take as "refresh this part". If the database cannot say, the page still
    renders and its stream starts from the feed's position, as it did before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state["live_position"] = ""
            if self._is_page(scope):
                factory = scope["app"].state.session_factory
                try:
                    state["live_position"] = await run_in_threadpool(_latest_position, factory)
                except Exception:
                    log.warning("reading the live position for a page failed", exc_info=True)
        await self.app(scope, receive, send)

    @staticmethod
    def _is_page(scope: Scope) -> bool:
        if scope["method"] != "GET" or scope["path"].startswith(NOT_PAGES):
            return False
        connection = HTTPConnection(scope)
        return "hx-request" not in connection.headers and SESSION_COOKIE in connection.cookies


def _latest_position(factory) -> str:
    with session_scope(factory) as session:
        return Position(*live.latest_ids(session)).encode()


def install(app: FastAPI) -> None:
    app.state.live_feed = Feed(app.state.session_factory, app.state.clock)
    app.include_router(router)
    app.add_middleware(PagePosition)


def _replay(factory, tab: Tab, since: Position) -> tuple[list[tuple[live.Change, Position]], bool]:
    """What ``tab`` missed after ``since`` (visible to it), and whether it was all."""
    with session_scope(factory) as session:
        tickets = live.ticket_changes(session, after=since.ticket, limit=REPLAY_MAX + 1)
        escalations = live.escalation_changes(session, after=since.escalation, limit=REPLAY_MAX + 1)
    complete = len(tickets) <= REPLAY_MAX and len(escalations) <= REPLAY_MAX
    missed = []
    for change in tickets[:REPLAY_MAX]:
        if tab.may_see(change):
            missed.append((change, Position(change.id, since.escalation)))
    top_t = tickets[min(len(tickets), REPLAY_MAX) - 1].id if tickets else since.ticket
    for change in escalations[:REPLAY_MAX]:
        if tab.may_see(change):
            missed.append((change, Position(top_t, change.id)))
    return missed, complete


def _tab_for(request: Request, topics: frozenset[str]) -> tuple[Tab, str]:
    """The signed-in person's tab (their visibility), and their session token."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    with session_scope(request.app.state.session_factory) as session:
        resumed = resume_session(
            session,
            token=token,
            now=request.app.state.clock.now(),
            policy=policy(request.app.state.settings),
        )
        if resumed is None:
            raise SignInRequired
        _, user = resumed
        return Tab(sees_all=user.role in CENTRE_ROLES, unit_id=user.unit_id, topics=topics), token


def _still_signed_in(request: Request, token: str) -> bool:
    with session_scope(request.app.state.session_factory) as session:
        return (
            resume_session(
                session,
                token=token,
                now=request.app.state.clock.now(),
                policy=policy(request.app.state.settings),
                touch=False,
            )
            is not None
        )


@router.get("/live")
async def stream(
    request: Request,
    topics: Annotated[str, Query(max_length=2000)] = "",
    last_event_id: Annotated[str | None, Query(max_length=80)] = None,
) -> Response:
    wanted = frozenset(t.strip() for t in topics.split(",") if TOPIC.match(t.strip()))
    try:
        tab, token = await run_in_threadpool(_tab_for, request, wanted)
    except SignInRequired:
        # 204 tells an EventSource not to reconnect; the page's next request signs in.
        return Response(status_code=204)
    feed: Feed = request.app.state.live_feed
    since = Position.decode(request.headers.get("last-event-id") or last_event_id)
    start = await feed.join(tab)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            replayed: set[tuple[str, int]] = set()
            if since is not None:
                missed, complete = await run_in_threadpool(
                    _replay, request.app.state.session_factory, tab, since
                )
                if not complete:
                    yield sse("reset", None, start)
                    return
                for old, at in missed:
                    replayed.add((old.kind, old.id))
                    for message in tab.messages(old, at):
                        yield message
                if missed:
                    yield sse("nav", None, None)
            yield sse("hello", {"topics": sorted(wanted)}, start)
            loop = asyncio.get_running_loop()
            beat = check = loop.time()
            while True:
                if tab.overflowed:
                    return  # the browser reconnects and resumes from its last id
                try:
                    change, position = await asyncio.wait_for(tab.queue.get(), timeout=1.0)
                except TimeoutError:
                    now = loop.time()
                    if await request.is_disconnected():
                        return
                    if now - check >= SESSION_CHECK_S:
                        check = now
                        if not await run_in_threadpool(_still_signed_in, request, token):
                            yield sse("signed-out", None, None)
                            return
                    if now - beat >= HEARTBEAT_S:
                        beat = now
                        yield ": keep-alive\n\n"
                    continue
                if isinstance(change, str):
                    yield change  # about calls, already addressed to the consoles
                elif change is None:
                    yield sse("nav", None, position)
                elif (change.kind, change.id) not in replayed:
                    for message in tab.messages(change, position):
                        yield message
        finally:
            feed.leave(tab)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
