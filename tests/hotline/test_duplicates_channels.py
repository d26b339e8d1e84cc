"""Duplicates of requests that no operator took (hotline.duplicates.suggest_at_intake), on
both backends: a web or Open311 request like an open ticket is recorded with its
candidates, reasons and score, once; the merge candidates and the merge page find it by
its text alone; a candidate merged away or dismissed is no longer offered; the text
is also compared with the newest tickets of its category, beyond the newest of all. And
the public timeline of a merged web request follows the ticket it joined."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from core.db import saved_id
from dispatch import closing, handling, review
from dispatch.models import Assignment
from hotline import duplicates, intake, public
from hotline.attachments import DirectoryStore, Limits
from hotline.open311 import clients, requests
from tests.factories import build_world
from tickets import service as tickets
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketCreate
from web.pages import queues_data
from web.pages.queues_data import Queue, Sort

TZ = ZoneInfo("Asia/Shanghai")
SECRET = "test-secret-for-lookup-codes-0123456789"
WATER = "幸福小区3号楼停水三天了，请尽快恢复供水"
WEB = public.PublicRequest(
    category="090104",
    description="幸福小区停水三天了，一直没有恢复供水",
    address="榆阳区幸福小区3号楼",
    phone="13800001234",
)


@pytest.fixture
def world(session, clock):
    built = build_world(session, clock.now())
    session.flush()
    return built


def _call(session, clock, description=WATER, **fields) -> Ticket:
    data = TicketCreate(
        channel=Channel.phone,
        description=description,
        caller_phone=fields.pop("caller_phone", "13900009999"),
        address=fields.pop("address", "幸福小区"),
        **fields,
    )
    return intake.submit(session, data=data, actor=None, now=clock.now()).ticket


def _web(session, clock, tmp_path, request=WEB, key="form-0001-abcdefgh") -> Ticket:
    return public.submit_request(
        session,
        request=request,
        photos=[],
        store=DirectoryStore(tmp_path),
        limits=public.photo_limits(Limits(max_bytes=1024, types=frozenset({"png"})), 1024),
        secret=SECRET,
        now=clock.now(),
        idempotency_key=key,
        tz=TZ,
    ).ticket


def _suggestions(session, ticket: Ticket) -> list[dict]:
    return [
        e.data
        for e in tickets.events_of(session, saved_id(ticket))
        if e.data.get("kind") == duplicates.SUGGESTED
    ]


def test_given_a_web_request_like_an_open_call_then_its_candidates_are_recorded_once(
    session, clock, tmp_path, world
):
    call = _call(session, clock)
    clock.advance(timedelta(hours=1))
    web = _web(session, clock, tmp_path)
    (note,) = _suggestions(session, web)
    (candidate,) = note["candidates"]
    assert candidate["id"] == call.id and candidate["number"] == call.number
    assert not candidate["same_caller"] and not candidate["same_address"]
    assert duplicates.SIMILAR <= candidate["similarity"] == candidate["score"] <= 1
    # the same form sent again is the same ticket: nothing recorded twice
    assert _web(session, clock, tmp_path).id == web.id
    assert len(_suggestions(session, web)) == 1
    # and the dispatcher's merge candidates list it, with the call as its original
    items = queues_data.items(session, queue=Queue.merge, sort=Sort.due, now=clock.now())
    assert [(i.ticket.id, i.original.id if i.original else None) for i in items] == [
        (web.id, call.id)
    ]


def test_given_nothing_alike_then_no_suggestion_is_recorded(session, clock, tmp_path, world):
    _call(session, clock, description="路灯不亮，晚上很黑", address="新建路", caller_phone="139")
    web = _web(session, clock, tmp_path)
    assert _suggestions(session, web) == []
    assert queues_data.count(session, queue=Queue.merge, now=clock.now()) == 0


def test_given_an_open311_request_then_the_same_phone_and_address_are_the_reasons(
    session, clock, world
):
    call = _call(
        session, clock, "工地拖欠工资三个月", caller_phone="13812345678", address="新建路8号"
    )
    client, _ = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    filed = requests.file_request(
        session,
        client=client,
        posted=requests.PostedRequest(
            service_code="040101",
            address_string="新建路8号",
            description="老板欠薪",
            phone="13812345678",
        ),
        now=clock.now(),
        tz=TZ,
        secret=SECRET,
    )
    ticket = tickets.get_ticket_by_number(session, filed.service_request_id)
    (found,) = duplicates.review_candidates(session, ticket=ticket, now=clock.now())
    assert found.ticket.id == call.id and found.same_caller and found.same_address
    assert found.score == pytest.approx(0.9 + found.similarity)


def test_given_a_recorded_candidate_merged_or_dismissed_then_no_longer_offered(
    session, clock, tmp_path, world
):
    call = _call(session, clock)
    other = _call(session, clock, caller_phone="13700007777", address="幸福小区北门")
    web = _web(session, clock, tmp_path)
    recorded = {c["id"] for c in _suggestions(session, web)[0]["candidates"]}
    assert recorded == {call.id, other.id}
    # the text changed since (an operator corrected it): the record still offers both
    web.description = "请核实"
    session.add(web)
    assert {c.ticket.id for c in duplicates.review_candidates(
        session, ticket=web, now=clock.now()
    )} == {call.id, other.id}  # fmt: skip
    closing.merge(  # no longer open: merged into the call
        session,
        ticket_id=other.id,
        parent_id=call.id,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    duplicates.dismiss(
        session,
        ticket_id=web.id,
        other_id=call.id,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    assert duplicates.review_candidates(session, ticket=web, now=clock.now()) == []
    assert queues_data.count(session, queue=Queue.merge, now=clock.now()) == 0


def test_given_many_newer_tickets_then_the_same_category_is_still_compared(
    session, clock, tmp_path, world, monkeypatch
):
    call = _call(session, clock, category_code="020301", category_name="供水")
    for n in range(3):
        _call(
            session,
            clock,
            f"第{n}条不相干的诉求：噪音扰民",
            caller_phone=f"1370000{n}",
            address=f"路{n}",
        )
    monkeypatch.setattr(duplicates, "INTAKE_SCAN", 2)  # the newest two are not the call
    web = _web(session, clock, tmp_path)  # the rules classify it 020301 (供水)
    assert web.category_code == "020301"
    assert [c["id"] for c in _suggestions(session, web)[0]["candidates"]] == [call.id]


def _reply(session, world, ticket: Ticket, text: str, now) -> None:
    lead = session.query(Assignment).filter_by(ticket_id=ticket.id, role="lead").one()
    handler = world.handlers["WATER"]
    handling.sign(session, assignment_id=lead.id, actor=handler, now=now)
    handling.reply(session, assignment_id=lead.id, text=text, actor=handler, now=now)
    review.review_reply(
        session, ticket_id=saved_id(ticket), approve=True, actor=world.staff["dispatcher"], now=now
    )


def test_given_a_merged_web_request_then_its_timeline_follows_the_ticket_it_joined(
    session, clock, tmp_path, world
):
    call = _call(session, clock, caller_name="李四")
    clock.advance(timedelta(hours=1))
    web = _web(session, clock, tmp_path)
    clock.advance(timedelta(hours=1))
    closing.merge(
        session,
        ticket_id=web.id,
        parent_id=call.id,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    view = public.public_view(session, ticket=web)
    assert view.merged and view.status == "in_progress"
    assert [s.kind for s in view.steps] == ["received", "dispatched", "merged"]
    assert view.steps[-1].unit == world.units["WATER"].name  # who now handles the matter

    clock.advance(timedelta(hours=1))
    _reply(session, world, call, "李四您好，已恢复供水", clock.now())
    view = public.public_view(session, ticket=web)
    assert view.status == "replied" and view.reply == "李*您好，已恢复供水"
    assert not view.can_rate  # the call's caller is the one called back

    clock.advance(timedelta(hours=1))
    closing.callback(
        session,
        ticket_id=call.id,
        satisfaction=Satisfaction.satisfied,
        actor=world.staff["operator"],
        now=clock.now(),
    )
    session.flush()
    session.refresh(web)
    assert web.status == Status.closed  # closed with its parent, its reply copied
    view = public.public_view(session, ticket=web)
    kinds = [s.kind for s in view.steps]
    assert kinds == ["received", "dispatched", "merged", "replied", "closed"]  # no rating
    assert view.status == "closed" and view.reply == "李*您好，已恢复供水"


# ---------------------------------------------------------------- by a worker


def test_given_a_defer_then_compared_after_the_commit_by_the_task_once(
    session, clock, tmp_path, world
):
    call = _call(session, clock)
    session.commit()
    deferred: list[int] = []
    web = public.submit_request(
        session, request=WEB, photos=[], store=DirectoryStore(tmp_path),
        limits=public.photo_limits(Limits(max_bytes=1024, types=frozenset({"png"})), 1024),
        secret=SECRET, now=clock.now(), idempotency_key="form-defer-0001", tz=TZ,
        defer_duplicates=deferred.append,
    ).ticket  # fmt: skip
    assert deferred == [] and _suggestions(session, web) == []  # not before the commit
    session.commit()
    assert deferred == [web.id]
    assert _suggestions(session, web) == []  # the web request did not compare

    assert duplicates.suggest_later(session, ticket_id=web.id, now=clock.now()) == 1
    [note] = _suggestions(session, web)
    assert note["candidates"][0]["id"] == call.id
    # a task delivered twice records once; a ticket gone records nothing
    assert duplicates.suggest_later(session, ticket_id=web.id, now=clock.now()) == 0
    assert duplicates.suggest_later(session, ticket_id=10**9, now=clock.now()) == 0


def test_given_a_rolled_back_intake_then_nothing_is_deferred(session, clock, tmp_path, world):
    session.commit()
    deferred: list[int] = []
    public.submit_request(
        session, request=WEB, photos=[], store=DirectoryStore(tmp_path),
        limits=public.photo_limits(Limits(max_bytes=1024, types=frozenset({"png"})), 1024),
        secret=SECRET, now=clock.now(), idempotency_key="form-defer-0002", tz=TZ,
        defer_duplicates=deferred.append,
    )  # fmt: skip
    session.rollback()
    session.commit()
    assert deferred == []


def test_given_redis_then_the_ids_wait_there_and_a_drain_compares_each_once(
    session, clock, tmp_path, world, redis_url
):
    from sqlmodel import Session

    from hotline import duplicates_queue

    pending = duplicates_queue.client(redis_url)
    pending.delete(duplicates_queue.PENDING_KEY)
    connection = session.connection()

    def factory() -> Session:
        return Session(bind=connection, join_transaction_mode="create_savepoint")

    call = _call(session, clock)
    session.commit()
    defer = duplicates_queue.by_redis(redis_url, factory, clock)
    webs = [
        public.submit_request(
            session, request=WEB, photos=[], store=DirectoryStore(tmp_path),
            limits=public.photo_limits(Limits(max_bytes=1024, types=frozenset({"png"})), 1024),
            secret=SECRET, now=clock.now(), idempotency_key=f"form-redis-000{n}", tz=TZ,
            defer_duplicates=defer,
        ).ticket
        for n in range(2)
    ]  # fmt: skip
    session.commit()
    assert pending.llen(duplicates_queue.PENDING_KEY) == 2
    assert all(_suggestions(session, w) == [] for w in webs)
    pending.lpush(duplicates_queue.PENDING_KEY, "not-an-id", webs[0].id)  # junk; a duplicate

    compared, found = duplicates_queue.drain(pending, factory, now=clock.now())
    assert compared == 3 and found >= 2  # the junk dropped; the second copy compared, skipped
    session.expire_all()
    assert [len(_suggestions(session, w)) for w in webs] == [1, 1]
    assert call.id in {c["id"] for c in _suggestions(session, webs[0])[0]["candidates"]}
    assert pending.llen(duplicates_queue.PENDING_KEY) == 0
    pending.close()


def test_given_redis_away_then_the_request_is_compared_where_it_came_in(
    session, clock, tmp_path, world, caplog
):
    from sqlmodel import Session

    from hotline import duplicates_queue
    from tests.services import free_port

    _call(session, clock)
    session.commit()
    connection = session.connection()
    defer = duplicates_queue.by_redis(
        f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there
        lambda: Session(bind=connection, join_transaction_mode="create_savepoint"),
        clock,
    )
    web = public.submit_request(
        session, request=WEB, photos=[], store=DirectoryStore(tmp_path),
        limits=public.photo_limits(Limits(max_bytes=1024, types=frozenset({"png"})), 1024),
        secret=SECRET, now=clock.now(), idempotency_key="form-defer-0003", tz=TZ,
        defer_duplicates=defer,
    ).ticket  # fmt: skip
    session.commit()
    session.expire_all()
    assert len(_suggestions(session, web)) == 1
    assert "compared here: Redis did not take it" in caplog.text


def test_the_beat_drains_the_waiting_requests_with_the_runtime_session_and_clock(
    session, clock, tmp_path, world, redis_url
):
    from sqlmodel import Session

    from core import runtime
    from core.settings import Settings
    from hotline import duplicates_queue, tasks
    from hotline.worker import BEAT_SCHEDULE

    _call(session, clock)
    web = _web(session, clock, tmp_path, key="form-defer-0004")
    session.commit()
    for note in [e for e in tickets.events_of(session, web.id) if e.rule == duplicates.RULE]:
        session.delete(note)  # as if deferred: not compared yet
    session.commit()
    pending = duplicates_queue.client(redis_url)
    pending.delete(duplicates_queue.PENDING_KEY)
    pending.lpush(duplicates_queue.PENDING_KEY, web.id)
    connection = session.connection()
    factory = lambda: Session(bind=connection, join_transaction_mode="create_savepoint")  # noqa: E731
    runtime.set_runtime(
        settings=Settings(environment="test", data_dir=tmp_path, broker_url=redis_url),
        session_factory=factory,
        clock=clock,
    )
    try:
        assert tasks.drain_duplicate_checks.run() == {"compared": 1, "suggested": 1}
        assert tasks.drain_duplicate_checks.run() == {"compared": 0, "suggested": 0}
    finally:
        runtime.reset_runtime()
        pending.close()
    runtime.set_runtime(
        settings=Settings(environment="test", data_dir=tmp_path),  # embedded: no Redis
        session_factory=factory,
        clock=clock,
    )
    try:
        assert tasks.drain_duplicate_checks.run() == {"compared": 0, "suggested": 0}
    finally:
        runtime.reset_runtime()
    assert BEAT_SCHEDULE["duplicate-checks"]["task"] == "duplicates.drain_pending"
