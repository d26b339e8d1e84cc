"""Phone calls: the call records, their recordings and the live transcript as Server-Sent
Events. The centre sees calls (operators, dispatchers, supervisors, admins); units do not.

The SIP edge runs in a process of its own, so the event stream polls the call record's live
text and its sequence number rather than listening to the recogniser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from sqlmodel import Session

from core.db import session_scope
from hotline.calls import records as call_records
from telephony.endpoint import CallDirection, Disposition
from telephony.models import CallbackAttemptRead, CallRead
from tickets import service as tickets
from web.auth import INTAKE, unauthenticated
from web.deps import (
    Credentials,
    IntakeStaff,
    IsoDateTime,
    PathId,
    RowId,
    SessionDep,
    authenticated,
    check_role,
)
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/calls", tags=["calls"], responses=ERROR_RESPONSES)
tickets_router = APIRouter(prefix="/tickets", tags=["calls"], responses=ERROR_RESPONSES)

# How often the stream looks at the call record; a partial is written at most every 0.5 s.
POLL_S = 0.3


class CallQuery(BaseModel):
    direction: CallDirection | None = None
    disposition: Disposition | None = None
    caller_number: str | None = Field(default=None, max_length=64)
    ticket_id: RowId | None = None
    arrived_from: IsoDateTime | None = None
    arrived_to: IsoDateTime | None = Field(default=None, description="exclusive")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


class CallPage(BaseModel):
    items: list[CallRead]
    next_cursor: str | None


@router.get(
    "",
    response_model=CallPage,
    summary="List phone calls",
    responses=error_responses(
        {403: "units' handlers do not see calls", 422: "a filter is invalid"}
    ),
)
def list_calls(
    session: SessionDep, _: IntakeStaff, query: Annotated[CallQuery, Query()]
) -> CallPage:
    """The centre's call records, newest first, filtered by direction, disposition, caller,
    ticket or arrival time; `next_cursor` pages on."""
    rows, next_cursor = call_records.list_calls(
        session,
        filters=call_records.CallFilters(**query.model_dump(exclude={"limit", "cursor"})),
        limit=query.limit,
        cursor=query.cursor,
    )
    return CallPage(items=[call_records.call_read(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{call_id:path}/recording",
    response_class=FileResponse,
    responses={
        **error_responses(
            {403: "units' handlers do not hear calls", 404: "no such call, or it has no recording"}
        ),
        200: {"content": {"audio/wav": {}}},
    },
    summary="Download a call's recording",
)
def call_recording(call_id: str, session: SessionDep, _: IntakeStaff) -> FileResponse:
    """The call's recording as a WAV file."""
    path = call_records.recording_of(session, call_id=call_id)
    return FileResponse(path, media_type="audio/wav", filename=path.name)


def _sse(event: str, data: dict, ident: int | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _view(
    factory: Callable[[], Session],
    call_id: str,
    credentials: HTTPAuthorizationCredentials | None = None,
) -> call_records.LiveView:
    with session_scope(factory) as session:
        if credentials is not None:
            check_role(authenticated(session, credentials), INTAKE)
        return call_records.live_view(session, call_id=call_id)


@router.get(
    "/{call_id:path}/transcript/stream",
    response_class=StreamingResponse,
    responses={
        **error_responses(
            {
                403: "units' handlers do not see calls",
                404: "no such call",
                422: "timeout_s is out of range",
            }
        ),
        200: {"content": {"text/event-stream": {}}},
    },
    summary="Follow a call's live transcript (SSE)",
)
async def transcript_stream(
    call_id: str,
    request: Request,
    credentials: Credentials,
    timeout_s: Annotated[float, Query(gt=0, le=3600, description="close the stream after")] = 900,
) -> StreamingResponse:
    """The live transcript as Server-Sent Events: `partial` ({seq, text}) on every change,
    then `final` ({text, transcribed_by, ticket_id}) once the call's transcript is attached
    (or it ended without one), and the stream closes; `timeout` when `timeout_s` passed."""
    if credentials is None:
        raise unauthenticated("a bearer token is required")
    factory = request.app.state.session_factory
    # Authorization and the first look in one unit of work, finished before the stream
    # starts: no transaction stays open while the stream waits.
    first = await run_in_threadpool(_view, factory, call_id, credentials)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        view, seen = first, 0
        while True:
            if view.seq > seen and not view.final:
                seen = view.seq
                yield _sse("partial", {"seq": view.seq, "text": view.text}, view.seq)
            if view.final:
                yield _sse(
                    "final",
                    {
                        "text": view.transcript or "",
                        "transcribed_by": view.transcribed_by.value,
                        "ticket_id": view.ticket_id,
                    },
                    view.seq,
                )
                return
            if loop.time() >= deadline:
                yield _sse("timeout", {"seq": view.seq})
                return
            await asyncio.sleep(POLL_S)
            view = await run_in_threadpool(_view, factory, call_id)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{call_id:path}",
    response_model=CallRead,
    summary="Read a phone call",
    responses=error_responses({403: "units' handlers do not see calls", 404: "no such call"}),
)
def get_call(call_id: str, session: SessionDep, _: IntakeStaff) -> CallRead:
    """One call record: caller, times, queue, disposition, transcript and the ticket it made."""
    return call_records.call_read(call_records.get_call(session, call_id))


@tickets_router.get(
    "/{ticket_id}/calls",
    response_model=list[CallRead],
    summary="A ticket's calls",
    responses=error_responses({403: "units' handlers do not see calls", 404: "no such ticket"}),
)
def calls_of_ticket(ticket_id: PathId, session: SessionDep, _: IntakeStaff) -> list[CallRead]:
    """The calls that made the ticket or called its caller back."""
    tickets.get_ticket(session, ticket_id)
    rows, _next = call_records.list_calls(
        session, filters=call_records.CallFilters(ticket_id=ticket_id), limit=200
    )
    return [call_records.call_read(r) for r in rows]


@tickets_router.get(
    "/{ticket_id}/callbacks",
    response_model=list[CallbackAttemptRead],
    summary="A ticket's callback attempts",
    responses=error_responses({403: "units' handlers do not see calls", 404: "no such ticket"}),
)
def callbacks_of_ticket(
    ticket_id: PathId, session: SessionDep, _: IntakeStaff
) -> list[CallbackAttemptRead]:
    """Every satisfaction-callback attempt (回访) of the ticket, in order."""
    tickets.get_ticket(session, ticket_id)
    return [
        CallbackAttemptRead.model_validate(a)
        for a in call_records.callback_attempts(session, ticket_id=ticket_id)
    ]
