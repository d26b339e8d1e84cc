"""jieba, which the rules segment a transcript with, and the Celery app that takes recordings
to transcribe are ready when the call services are: the first report's end used to import
them, holding the GIL for up to seconds while every call of the SIP process waited."""

from __future__ import annotations

import os
import subprocess
import sys

from dispatch import segment
from hotline.calls import services as call_services


def test_given_call_services_then_jieba_is_loaded_before_the_first_call(
    db, make_services, monkeypatch
):
    loaded: list[str] = []

    class Tokenizer:
        def initialize(self) -> None:
            loaded.append("dictionary")

    class Jieba:
        dt = Tokenizer()

    monkeypatch.setattr(segment, "jieba_module", lambda: Jieba)

    make_services(None)

    assert loaded == ["dictionary"]


def test_given_the_warm_up_then_the_real_dictionary_is_loaded():
    call_services.warm_dispatch()

    assert segment.jieba_module().dt.initialized


def test_given_call_services_that_send_recordings_to_the_worker_then_its_queue_is_warmed(
    db, clock, settings, monkeypatch
):
    # The first call without a live stream imported the Celery app in a finisher thread:
    # under 300 calls at once that import held the SIP process for seconds.
    warmed: list[str] = []
    monkeypatch.setattr(call_services, "warm_transcription_queue", lambda: warmed.append("q"))

    for enqueue in (None, lambda call_id: None):
        call_services.CallServices(
            session_factory=db.factory,
            clock=clock,
            settings=settings,
            recognizer=None,
            enqueue_transcription=enqueue,
        ).close()

    assert warmed == ["q"]  # only the services that send to the worker themselves


def test_given_the_queue_warm_up_then_celery_is_ready_without_asking_the_broker():
    # A broker nobody listens on: the warm-up must not connect (the edge starts regardless).
    script = (
        "import sys\n"
        "from hotline.calls.services import warm_transcription_queue\n"
        "warm_transcription_queue()\n"
        "missing = [m for m in ('hotline.worker', 'celery.app.amqp', 'celery.events.dispatcher')"
        " if m not in sys.modules]\n"
        "assert not missing, missing\n"
    )
    env = {**os.environ, "HOTLINE_BROKER_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr[-2000:]
