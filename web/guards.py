"""A NUL character may not enter the API in any string: PostgreSQL text cannot hold one
(it would be a server error there, and a different answer on SQLite), and no caller has a
legitimate use for it.

The request models live in the packages that own them (tickets, dispatch, accounts), so
the check stands at the edge of the application instead, where it covers every string the
API takes — path, query and JSON body alike — before any model sees it. A hit answers the
422 a failed validation answers, naming where the character was."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.errors import error_body

# `\u0000` in JSON text, but not `\\u0000` (an escaped backslash followed by "u0000").
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def contains_nul(raw: bytes) -> bool:
    return b"\x00" in raw or _ESCAPED_NUL.search(raw) is not None


class RejectNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _reject(send, "path")
            return
        if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            await _reject(send, "query")
            return
        if not _textual(scope):
            # Binary bodies (uploads, audio) may hold NUL bytes; only text bodies are parsed
            # into strings the database stores.
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if contains_nul(bytes(body)):
            await _reject(send, "body")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _textual(scope: Scope) -> bool:
    """A body that becomes strings: JSON (`application/json`, `…+json`) or a form."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind in _TEXT_TYPES or kind.endswith(b"+json")
    return True  # no declared type: FastAPI reads it as JSON


_TEXT_TYPES = frozenset({b"application/json", b"application/x-www-form-urlencoded", b"text/plain"})


async def _reject(send: Send, where: str) -> None:
    problem: dict[str, Any] = {
        "field": where,
        "in": where,
        "loc": [where],
        "message": "must not contain the NUL character",
        "type": "string_nul",
    }
    body = error_body(
        "validation_error", f"invalid request: {where}: {problem['message']}", [problem]
    )
    content = json.dumps(
        {**body, "detail": [{k: problem[k] for k in ("loc", "type")} | {"msg": problem["message"]}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
