"""The offline transcription on a real Celery worker: the SIP side records a call live ASR
had no room for and queues `call_intake.transcribe_recording`; a worker process on the embedded
filesystem broker loads the model, decodes the recording and dispatches the ticket."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from hotline.calls import services as call_services
from hotline.worker import make_app
from telephony.models import CallRecord, TranscribedBy
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK_KEYWORD, Db, caller, lead_unit, serve, ticket_of
from tickets.models import Status

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.celery_worker
def test_given_live_asr_full_when_a_real_worker_takes_the_task_then_the_ticket_is_dispatched(
    tmp_path, clock, full_recognizer, vosk_model_dir
):
    from core.db import make_engine, make_session_factory
    from dispatch import rulebook
    from hotline.tables import metadata
    from tests.factories import build_world
    from tests.hotline.conftest import KOREAN_RULES

    url = f"sqlite:///{tmp_path / 'core.db'}"
    settings = Settings(environment="test", data_dir=tmp_path, database_url=url)
    engine = make_engine(url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        world = build_world(s, clock.now())
        for rule in KOREAN_RULES:
            rulebook.create_rule(s, data=rule, now=clock.now())
        s.commit()
    db = Db(factory, world, url)
    celery_app = make_app(settings)
    services = call_services.CallServices(
        session_factory=factory,
        clock=clock,
        settings=settings,
        recognizer=full_recognizer,
        enqueue_transcription=lambda call_id: celery_app.send_task(
            "calls.transcribe_recording", args=[call_id]
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {
        "HOTLINE_ENVIRONMENT": "test",
        "HOTLINE_SECRET_KEY": os.environ["HOTLINE_SECRET_KEY"],
        "HOTLINE_DATA_DIR": str(tmp_path),
        "HOTLINE_DATABASE_URL": url,
        "HOTLINE_ASR__MODEL_PATH": str(vosk_model_dir),
        "HOTLINE_ASR__POOL_SIZE": "1",
    }
    log = tmp_path / "worker.log"
    try:
        call = caller(call_id="worker-1@pbx.test")
        serve(services, call, settings)
        assert ticket_of(db, call.call_id)[0].status == Status.intake
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "hotline.worker",
                    "worker",
                    "--pool=solo",
                    "--loglevel=INFO",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "-n",
                    f"calls-{uuid.uuid4().hex[:6]}@localhost",
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def transcribed() -> bool:
                return db.one(CallRecord, CallRecord.call_id == call.call_id).transcript is not None

            try:
                wait_until(transcribed, timeout=60, message="the offline transcript")
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}\n--- worker log ---\n{log.read_text()[-4000:]}"
                ) from exc
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        ticket, record = ticket_of(db, call.call_id)
        assert record.transcribed_by is TranscribedBy.offline and LEAK_KEYWORD in record.transcript
        assert ticket.status == Status.dispatched and lead_unit(db, ticket.id) == "WATER"
    finally:
        services.close()
        engine.dispose()
