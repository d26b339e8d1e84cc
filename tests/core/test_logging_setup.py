from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from core import logging_setup
from core.logging_setup import bind, bound, configure, current_ids, mask
from core.settings import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (library_handlers, propagate, library_level) in libraries.items():
        logging.getLogger(name).handlers[:] = library_handlers
        logging.getLogger(name).propagate = propagate
        logging.getLogger(name).setLevel(library_level)
    logging.captureWarnings(False)


def _configured(fmt: str) -> io.StringIO:
    out = io.StringIO()
    configure(Settings(environment="test", log_format=fmt), process="web", stream=out)
    return out


def test_given_text_format_then_a_line_has_time_level_process_logger_ids_and_message(
    restore_logging,
):
    out = _configured("text")
    with bound(request="r-1", ticket="20261205-0001"):
        logging.getLogger("hotline.intake").info("ticket %s created", "20261205-0001")
    [line] = out.getvalue().splitlines()
    assert line.endswith(
        " INFO    web hotline.intake [request=r-1 ticket=20261205-0001]: "
        "ticket 20261205-0001 created"
    )
    assert line[:4].isdigit() and line[10] == "T"  # an ISO time with its UTC offset


def test_given_json_format_then_every_line_parses_with_its_ids_and_traceback(restore_logging):
    out = _configured("json")
    log = logging.getLogger("telephony.sip_dialogs")
    with bound(call="a84b4c76e66710@10.0.0.2"):
        log.info("来电 answered\nsecond line")
        try:
            raise RuntimeError("caller 13812345678 hung up")
        except RuntimeError:
            log.exception("handler failed")
    log.warning("no ids here")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "来电 answered\nsecond line"
    assert first["call_id"] == "a84b4c76e66710@10.0.0.2" and "request_id" not in first
    assert first["level"] == "INFO" and first["process"] == "web"
    assert first["logger"] == "telephony.sip_dialogs" and "ts" in first
    assert "RuntimeError: caller *******5678 hung up" in second["exc"]
    assert "13812345678" not in lines[1]
    assert "call_id" not in third and third["level"] == "WARNING"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("from 13812345678 now", "from *******5678 now"),
        ("from +8613812345678", "from **********5678"),
        ("sip:13812345678@10.0.0.2", "sip:*******5678@10.0.0.2"),
        (
            "GET /api?caller_phone=13812345678 HTTP/1.1",
            "GET /api?caller_phone=*******5678 HTTP/1.1",
        ),
        ("mobile 138 1234 5678.", "mobile *** **** 5678."),
        ("landline 010-62345678", "landline 010-****5678"),
        ("id 11010119900307123X", "id **************123X"),
        # not a caller's: ticket numbers, hex Call-IDs, UUIDs, short numbers, ports
        ("ticket 20261205-0001", "ticket 20261205-0001"),
        ("call 5b1e9a7340128876@pbx", "call 5b1e9a7340128876@pbx"),
        ("id 4f9d1a0c-1234-4321-8888-123456789012", "id 4f9d1a0c-1234-4321-8888-123456789012"),
        ("queue 123456 at 0.0.0.0:5060", "queue 123456 at 0.0.0.0:5060"),
    ],
)
def test_runs_of_seven_or_more_digits_keep_only_their_last_four(text, masked):
    assert mask(text) == masked


def test_given_a_number_in_the_arguments_then_the_written_line_is_masked(restore_logging):
    out = _configured("text")
    logging.getLogger("x").warning("caller %s waited %d s", "13812345678", 12)
    # masked, the last four kept (138****5678 when accounts.privacy's filter, which the web
    # app installs, got there first in this process)
    assert re.search(r"caller (?:\*{7}|138\*{4})5678 waited 12 s", out.getvalue())
    assert "13812345678" not in out.getvalue()


def test_ids_belong_to_their_context_thread_and_task():
    seen: dict[str, dict[str, str]] = {}
    with bound(request="outer"):
        thread = threading.Thread(target=lambda: seen.setdefault("thread", current_ids()))
        thread.start()
        thread.join()

        async def in_task() -> None:
            bind(call="c-1")  # this task's copy only
            seen["task"] = current_ids()

        asyncio.run(in_task())
        seen["after"] = current_ids()
    assert seen == {
        "thread": {},  # a new thread starts with no ids: the SIP edge binds a call's own
        "task": {"request": "outer", "call": "c-1"},
        "after": {"request": "outer"},
    }
    assert current_ids() == {}
    with pytest.raises(ValueError, match="unknown log ids"):
        bind(user="x")


def test_configure_twice_keeps_one_handler_and_hands_library_loggers_to_it(restore_logging):
    uvicorn_handler = logging.StreamHandler(io.StringIO())
    access = logging.getLogger("uvicorn.access")
    access.addHandler(uvicorn_handler)
    access.propagate = False
    # a test server of this process (log_level="warning") may have raised its level
    access.setLevel(logging.INFO)
    _configured("text")
    out = _configured("json")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logging_setup._HotlineHandler)]
    assert len(ours) == 1
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    assert json.loads(out.getvalue())["logger"] == "uvicorn.access"
    assert uvicorn_handler.stream.getvalue() == ""


def test_start_up_warnings_are_lines_in_the_same_format(restore_logging):
    out = _configured("json")
    warnings.warn("something to fix at start", UserWarning, stacklevel=1)
    entry = json.loads(out.getvalue().splitlines()[-1])
    assert entry["logger"] == "py.warnings" and entry["level"] == "WARNING"
    assert "UserWarning: something to fix at start" in entry["message"]


def test_the_uvicorn_log_config_is_a_dict_config_that_ends_in_configure(restore_logging):
    config = json.loads(logging_setup.UVICORN_LOG_CONFIG.read_text())
    assert config["handlers"]["hotline"]["()"] == "core.logging_setup.uvicorn_handler"
    assert config["root"]["handlers"] == ["hotline"]
    assert all(not c["handlers"] and c["propagate"] for c in config["loggers"].values())


def test_celery_headers_carry_the_ids_to_the_task_that_binds_them_while_it_runs():
    headers: dict[str, object] = {"id": "t-1"}
    with bound(request="req-9", call="call-9"):
        logging_setup._publish_ids(headers=headers, body=(), exchange="")
    assert headers == {"id": "t-1", "hotline_request": "req-9", "hotline_call": "call-9"}
    # The worker side: protocol 2 puts custom headers on the task's request.
    task = SimpleNamespace(request=SimpleNamespace(**headers, headers=None))
    logging_setup._bind_task(task_id="t-1", task=task, kwargs={"ticket_id": 42})
    assert current_ids() == {"request": "req-9", "call": "call-9", "ticket": "42"}
    logging_setup._unbind_task(task_id="t-1")
    assert current_ids() == {}


def test_a_task_beat_queued_binds_the_ids_its_arguments_name():
    def transcribe_recording(call_id: str) -> None: ...

    task = SimpleNamespace(request=SimpleNamespace(headers=None), run=transcribe_recording)
    logging_setup._bind_task(task_id="t-3", task=task, args=["a84b4c76@pbx"], kwargs={})
    assert current_ids() == {"call": "a84b4c76@pbx"}
    logging_setup._unbind_task(task_id="t-3")
    assert current_ids() == {}


def test_a_task_queued_with_no_ids_runs_with_none():
    headers: dict[str, object] = {}
    logging_setup._publish_ids(headers=headers)
    assert headers == {}
    task = SimpleNamespace(request=SimpleNamespace(headers={}))
    logging_setup._bind_task(task_id="t-2", task=task, kwargs={})
    assert current_ids() == {}
    logging_setup._unbind_task(task_id="t-2")
