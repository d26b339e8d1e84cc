"""Every request gets an id: the caller's ``X-Request-ID`` (a proxy's, say nginx's
``$request_id``) when it is a sane token, a new one otherwise. It is echoed in the
response and bound to the log context (``core.logging_setup``), so every line logged for
the request — uvicorn's access line included — and every Celery task it queues carry it."""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logging_setup

HEADER = "X-Request-ID"
# A header value goes into log lines and task headers as it is: no spaces, quotes or
# control characters, and not a novel.
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if _SANE.fullmatch(given) else logging_setup.new_request_id()
    return logging_setup.new_request_id()


class RequestIds:
    """Pure ASGI (no task of its own), so the id is bound in the request's own context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        token = logging_setup.bind(request=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logging_setup.reset(token)
