"""One log format for every process (web, SIP edge, worker, beat): a readable line on a
terminal, or one JSON object per line with ``HOTLINE_LOG_FORMAT=json``. Each line carries
the ids of what it happened for — the HTTP request, the SIP call, the ticket — taken from
context variables that the web middleware (``web.request_ids``), a call's thread and a
Celery task bind; a task gets the ids of whoever queued it through its message headers.

Numbers that may be a caller's are masked in every line. The rules here are deliberately
blunt (``core`` knows nothing of ``accounts.privacy``'s finer ones): any run of seven or
more digits keeps only its last four.

``configure(settings, process=...)`` is called once in each process, by the ``hotline``
command for the SIP edge, by the Celery ``setup_logging`` signal in workers and beat, and
by uvicorn's log config (``UVICORN_LOG_CONFIG``) in web processes.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from core.settings import Settings, get_settings

# What a line may be about, in the order lines show them.
ID_KINDS = ("request", "call", "ticket")
# The Celery message headers that carry the ids from the publisher to the task.
HEADER_PREFIX = "hotline_"
# uvicorn's `--log-config`: hands its loggers to `configure` (see `uvicorn_handler`).
UVICORN_LOG_CONFIG = Path(__file__).with_name("uvicorn_log.json")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("hotline_log_ids", default=_EMPTY)


# ---------------------------------------------------------------- the ids of a line


def current_ids() -> dict[str, str]:
    return dict(_ids.get())


def bind(**ids: object) -> Token[Mapping[str, str]]:
    """Adds ``request=``, ``call=`` or ``ticket=`` ids to the lines logged from here on in
    this context (a None leaves an id as it is); ``reset`` the token to take them back."""
    unknown = set(ids) - set(ID_KINDS)
    if unknown:
        raise ValueError(f"unknown log ids {sorted(unknown)}: expected {ID_KINDS}")
    merged = {**_ids.get(), **{k: str(v) for k, v in ids.items() if v is not None}}
    return _ids.set(MappingProxyType(merged))


def reset(token: Token[Mapping[str, str]]) -> None:
    _ids.reset(token)


@contextmanager
def bound(**ids: object) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------- masking

# Seven or more digits (a mobile, a landline without its area code, an ID-card number with
# its final X, +86…) or a mobile written 138 1234 5678. Not touching a letter or digit: a
# hex Call-ID or a UUID is not a phone number; nor followed by "-digit": the date part of a
# ticket number (20261205-0001) is not one either, nor the last group of a UUID.
_NUMBER = re.compile(
    r"(?<![0-9A-Za-z])(?<![0-9A-Fa-f]-[0-9A-Fa-f]{4}-)"
    r"(?:\+?\d{7,}[Xx]?|1[3-9]\d[ -]\d{4}[ -]\d{4})(?![0-9A-Za-z]|-\d)"
)


def _keep_last_four(match: re.Match[str]) -> str:
    text, kept, out = match.group(), 0, []
    for char in reversed(text):
        if char.isalnum() and kept < 4:
            kept += 1
            out.append(char)
        else:
            out.append("*" if char.isalnum() or char == "+" else char)
    return "".join(reversed(out))


def mask(text: str) -> str:
    """13812345678 → *******5678, +8613812345678 → **********5678."""
    return _NUMBER.sub(_keep_last_four, text)


class MaskFilter(logging.Filter):
    """Masks the message and the traceback of every record its handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


class ContextFilter(logging.Filter):
    """Puts the ids bound where the record was made, and the process's role, on it."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ids"):
            record.ids = current_ids()
        record.role = self.process
        return True


# ---------------------------------------------------------------- formats


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``2026-12-05T14:31:10.105+08:00 INFO    web uvicorn.access [request=3f…]: …``"""

    def format(self, record: logging.LogRecord) -> str:
        ids: Mapping[str, str] = getattr(record, "ids", {})
        tags = " ".join(f"{k}={ids[k]}" for k in ID_KINDS if k in ids)
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {getattr(record, 'role', '-')} "
            f"{record.name}{f' [{tags}]' if tags else ''}: {record.getMessage()}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, logger, message, the ids as
    ``request_id``/``call_id``/``ticket_id`` (only those bound), and ``exc`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "process": getattr(record, "role", None),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids: Mapping[str, str] = getattr(record, "ids", {})
        entry |= {f"{k}_id": ids[k] for k in ID_KINDS if k in ids}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


# ---------------------------------------------------------------- set-up

# Loggers that their libraries give handlers of their own: their lines go to the root's.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")


class _HotlineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler ``configure`` puts on the root logger (found again by its class)."""


def configure(
    settings: Settings, *, process: str, stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Handler:
    """Sends every logger's lines through one handler on the root logger, in the format
    ``settings.log_format`` names, with ids and masking. ``process`` (web, sip, worker,
    beat) is on every line. Called again, it replaces its handler; the handlers of others
    (a test's log capture) stay, except the bare stream handlers of ``basicConfig``."""
    handler = _HotlineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter(process))
    handler.addFilter(MaskFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _HotlineHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # Start-up warnings (Python's `warnings`) are log lines too, in the same format.
    logging.captureWarnings(True)
    return handler


def uvicorn_handler() -> logging.Handler:
    """The handler of ``UVICORN_LOG_CONFIG``: uvicorn applies that config in each of its
    processes before it builds the app, so its own lines have the format from the first."""
    return configure(get_settings(), process="web")


# ---------------------------------------------------------------- Celery


def _publish_ids(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        for kind, value in _ids.get().items():
            headers.setdefault(HEADER_PREFIX + kind, value)


_task_tokens: dict[str, Token[Mapping[str, str]]] = {}


def _arguments(task: Any, args: Any, kwargs: Any) -> Mapping[str, Any]:
    """The task's arguments by name (``transcribe_recording(call_id)`` is sent positionally)."""
    try:
        return inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {})).arguments
    except (AttributeError, TypeError, ValueError):  # not a function: the names given
        return kwargs or {}


def _task_ids(task: Any, args: Any = (), kwargs: Any = None) -> dict[str, str]:
    """The ids the message brought, else those its arguments name (``call_id=``, ``ticket_id=``:
    a task beat queues has only those)."""
    request = task.request
    headers = getattr(request, "headers", None) or {}
    arguments = _arguments(task, args, kwargs)
    ids: dict[str, str] = {}
    for kind in ID_KINDS:
        value = getattr(request, HEADER_PREFIX + kind, None) or headers.get(HEADER_PREFIX + kind)
        value = value or arguments.get(f"{kind}_id")
        if isinstance(value, str | int):
            ids[kind] = str(value)
    return ids


def _bind_task(
    task_id: str | None = None, task: Any = None, args: Any = (), kwargs: Any = None, **_: Any
) -> None:
    if task_id is not None and task is not None:
        _task_tokens[task_id] = bind(**_task_ids(task, args, kwargs))


def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        try:
            reset(token)
        except ValueError:  # set in another context (a pool that moved the task): let go
            _ids.set(_EMPTY)


def _celery_setup_logging(**_: Any) -> None:
    # The process's role from its command line: `celery … beat` or a worker (with -B too).
    argv = sys.argv[1:]
    process = "beat" if "beat" in argv and "worker" not in argv else "worker"
    configure(get_settings(), process=process)


def connect_celery() -> None:
    """Celery hands its logging to ``configure`` (it sets up none of its own once a
    ``setup_logging`` receiver exists), and the ids bound where a task is queued travel
    in its headers and are bound while it runs."""
    from celery import signals

    signals.setup_logging.connect(_celery_setup_logging, weak=False, dispatch_uid="hotline-log")
    signals.before_task_publish.connect(_publish_ids, weak=False, dispatch_uid="hotline-ids")
    signals.task_prerun.connect(_bind_task, weak=False, dispatch_uid="hotline-ids")
    signals.task_postrun.connect(_unbind_task, weak=False, dispatch_uid="hotline-ids")
