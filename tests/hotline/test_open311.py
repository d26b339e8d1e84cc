"""The Open311 service layer on both backends: services from the rule pack, a request filed
into the same intake as a call (classified, dispatched, clocked, channel stored), tokens,
client keys, the public mapping and the rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from core.errors import Conflict, InvalidInput, NotFound
from dispatch import reference, rulebook
from dispatch.models import Assignment, AssignmentRole, Rule
from hotline.open311 import clients, mapping, requests, services
from hotline.open311.limits import TokenBucket
from hotline.open311.models import Open311Client
from tests.factories import build_world
from tickets.models import Channel, Status, Ticket, TicketEvent

TZ = ZoneInfo("Asia/Shanghai")
SECRET = "test-secret-of-this-installation"


@pytest.fixture
def world(session, clock):
    built = build_world(session, clock.now())
    session.flush()
    return built


@pytest.fixture
def app_client(session, world, clock) -> clients.Verified:
    client, key = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    verified = clients.authenticate(session, key=key, now=clock.now())
    assert verified is not None
    return verified


def _posted(**changes: object) -> requests.PostedRequest:
    fields: dict[str, object] = {
        "service_code": "040101",
        "address_string": "榆阳区新建路8号",
        "description": "工地拖欠工资三个月",
        "phone": "13812345678",
        **changes,
    }
    return requests.PostedRequest(**fields)  # type: ignore[arg-type]


def _file(session, client, clock, **changes: object) -> tuple[requests.Filed, Ticket]:
    filed = requests.file_request(
        session,
        client=client,
        posted=_posted(**changes),
        now=clock.now(),
        tz=TZ,
        secret=SECRET,
    )
    ticket = session.exec(select(Ticket).where(Ticket.number == filed.service_request_id)).one()
    return filed, ticket


def test_services_follow_the_enabled_rules_of_the_pack(session, world, clock):
    found = services.catalogue(session)
    assert [(s.code, s.name, s.group) for s in found.services] == [
        ("020101", "物业管理", "02"),
        ("020301", "供水", "02"),
        ("030201", "市容秩序", "03"),
        ("040101", "劳动报酬", "04"),
    ]
    rule = session.exec(select(Rule).where(Rule.name == "占道经营")).one()
    rulebook.update_rule(session, rule_id=rule.id, data={"enabled": False}, now=clock.now())
    session.commit()
    assert "030201" not in services.catalogue(session).by_code
    with pytest.raises(NotFound, match="030201"):
        services.get_service(session, code="030201")


def test_a_filed_request_is_classified_dispatched_and_clocked_like_a_call(
    session, world, app_client, clock
):
    filed, ticket = _file(session, app_client, clock, attributes={"URGENCY": ["urgent"]})
    assert ticket.channel == Channel.open311
    assert ticket.status == Status.dispatched
    assert (ticket.category_code, ticket.urgency.value) == ("040101", "urgent")
    (lead,) = session.exec(select(Assignment).where(Assignment.ticket_id == ticket.id)).all()
    assert lead.role == AssignmentRole.lead and lead.unit_id == world.units["HRSS"].id
    assert lead.rule_name == "欠薪"
    assert lead.started_at == clock.now() < lead.sign_due_at < lead.close_due_at
    actions = [
        e.action
        for e in session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id))
    ]
    # and the note of what was filed, by which client (hotline.open311.requests._kept)
    assert actions == ["create", "dispatch", "note"]
    assert (
        filed.service_notice == f"已受理，工单编号 {ticket.number}，已派至人力资源和社会保障局办理"
    )
    assert requests.resolve_token(session, token=filed.token, secret=SECRET) == ticket.number


def test_the_rules_may_reclassify_what_the_client_chose(session, world, app_client, clock):
    # 物业管理 was chosen, but the words are about unpaid wages: the rule pack decides, as
    # it does for a call
    _, ticket = _file(session, app_client, clock, service_code="020101")
    assert ticket.category_code == "040101"
    assert ticket.status == Status.dispatched


def test_a_request_no_rule_routes_waits_in_the_manual_dispatch_queue(
    session, world, app_client, clock
):
    filed, ticket = _file(session, app_client, clock, description="咨询一下办事时间")
    assert ticket.status == Status.pending_dispatch
    assert filed.service_notice.endswith("正在分派承办单位")
    row = requests.get_request(session, request_id=ticket.number, tz=TZ)
    assert row["status"] == "open" and row["agency_responsible"] is None


def test_bad_input_is_refused_with_every_problem_named_and_nothing_filed(
    session, world, app_client, clock
):
    with pytest.raises(requests.Rejected) as refused:
        _file(
            session,
            app_client,
            clock,
            address_string="",
            lat="38.1",
            attributes={"URGENCY": ["soon"], "REQUEST_TYPE": ["help", "complaint"]},
        )
    problems = refused.value.problems
    assert problems == [
        "lat and long are given together or not at all",
        "attribute[REQUEST_TYPE] (诉求类型) takes one value, got 2",
        "attribute[URGENCY] (紧急程度): 'soon' is not one of normal, urgent, very_urgent",
    ]
    with pytest.raises(requests.Rejected, match="service_code is required"):
        _file(session, app_client, clock, service_code=" ")
    with pytest.raises(requests.Rejected, match="description is longer than 4000"):
        _file(session, app_client, clock, description="长" * 4001)
    with pytest.raises(requests.Rejected, match="media_url"):
        _file(session, app_client, clock, media_url="javascript:alert(1)")
    assert session.exec(select(Ticket)).all() == []


def test_without_a_description_the_service_name_is_the_text(session, world, app_client, clock):
    _, ticket = _file(
        session,
        app_client,
        clock,
        description="",
        address_string="",
        address_id="A-1001",
        media_url="https://img.example.org/1.jpg",
    )
    # the media link is kept on the ticket's record, not in the text the public reads
    assert ticket.description == "劳动报酬"
    assert ticket.address == "address_id A-1001"


def test_tokens_made_up_or_made_under_another_secret_resolve_to_nothing(
    session, world, app_client, clock
):
    filed, ticket = _file(session, app_client, clock)
    number, mac = filed.token.split(".", 1)
    forged = requests.make_token(number, secret="another installation")
    unknown = requests.make_token("20261127-999999", secret=SECRET)
    for token in (forged, number, f"{number}.", f"{number}.{mac[:-1]}", unknown, "x" * 101):
        with pytest.raises(NotFound):
            requests.resolve_token(session, token=token, secret=SECRET)


def test_client_keys_are_stored_hashed_checked_and_revoked(session, world, clock):
    client, key = clients.issue(session, name="  网格  App ", actor="admin:test", now=clock.now())
    assert client.name == "网格 App" and key not in client.key_hash and len(key) >= 43
    verified = clients.Verified(client.id, "网格 App")
    assert clients.authenticate(session, key=key, now=clock.now()) == verified
    assert clients.authenticate(session, key=key + "x", now=clock.now()) is None
    # remembered now, and still refused from the next request on once revoked here
    assert clients.authenticate(session, key=key, now=clock.now()) == verified
    clients.revoke(session, client_id=client.id, actor="admin:test", now=clock.now())
    assert clients.authenticate(session, key=key, now=clock.now()) is None
    with pytest.raises(Conflict):
        clients.revoke(session, client_id=client.id, actor="admin:test", now=clock.now())
    with pytest.raises(NotFound):
        clients.revoke(session, client_id=client.id + 100, actor="admin:test", now=clock.now())
    with pytest.raises(InvalidInput):
        clients.issue(session, name=" ", actor="admin:test", now=clock.now())


def _revoked_elsewhere(session, client_id: int, now: datetime) -> None:
    """What another process's revocation does to this one: the row changes, nothing else."""
    session.execute(
        update(Open311Client)
        .where(col(Open311Client.id) == client_id)
        .values(revoked_at=now, revoked_by="admin:other-process")
    )


def test_given_a_key_revoked_by_another_process_then_refused_within_the_stated_bound(
    session, world, clock
):
    client, key = clients.issue(session, name="网格 App", actor="admin:test", now=clock.now())
    assert clients.authenticate(session, key=key, now=clock.now()) is not None
    _revoked_elsewhere(session, client.id, clock.now())
    # this process remembered the key: it may take it until VERIFIED_FOR has passed ...
    clock.advance(clients.VERIFIED_FOR - timedelta(seconds=1))
    assert clients.authenticate(session, key=key, now=clock.now()) is not None
    # ... and not a moment longer
    clock.advance(timedelta(seconds=1))
    assert clients.authenticate(session, key=key, now=clock.now()) is None
    clock.advance(clients.VERIFIED_FOR * 10)
    assert clients.authenticate(session, key=key, now=clock.now()) is None


def test_given_an_unknown_key_then_it_is_read_again_each_time(session, world, clock):
    client, key = clients.issue(session, name="网格 App", actor="admin:test", now=clock.now())
    _revoked_elsewhere(session, client.id, clock.now())
    assert clients.authenticate(session, key=key, now=clock.now()) is None
    # a refusal is never remembered: the row is what answers
    session.execute(
        update(Open311Client).where(col(Open311Client.id) == client.id).values(revoked_at=None)
    )
    assert clients.authenticate(session, key=key, now=clock.now()) is not None


def test_requests_page_newest_first(session, world, app_client, clock):
    numbers = []
    for _ in range(3):
        numbers.append(_file(session, app_client, clock)[0].service_request_id)
        clock.advance(timedelta(minutes=1))
    query = requests.parse_query({"page_size": "2"})
    first = requests.list_requests(session, query=query, now=clock.now(), tz=TZ)
    query = requests.parse_query({"page_size": "2", "page": "2"})
    second = requests.list_requests(session, query=query, now=clock.now(), tz=TZ)
    assert [r["service_request_id"] for r in first + second] == numbers[::-1]
    with pytest.raises(requests.Rejected, match="page_size"):
        requests.parse_query({"page_size": "1001"})


def test_reference_snapshot_change_rebuilds_the_catalogue(session, world, clock):
    session.commit()
    # a session of its own: one that changed reference data reads it fresh every time
    other = Session(bind=session.connection(), join_transaction_mode="create_savepoint")
    before = services.catalogue(other)
    assert services.catalogue(other) is before
    reference.bump(other)
    assert services.catalogue(other) is not before
    other.close()


# ---------------------------------------------------------------- pure parts


def _ticket(status: Status, **fields: object) -> Ticket:
    now = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    return Ticket.model_validate(
        {
            "number": "20261127-000001",
            "channel": Channel.phone,
            "status": status,
            "description": "张三说路灯坏了",
            "caller_name": "张三",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
    )


@pytest.mark.parametrize("status", list(Status))
def test_every_status_is_open_or_closed(status):
    expected = "closed" if status in {Status.closed, Status.archived, Status.merged} else "open"
    assert mapping.open_or_closed(status) == expected


def test_status_notes_are_the_reply_the_centre_approved_with_personal_data_masked():
    reply = "已修复，请张三拨打13812345678确认"
    assert mapping.status_notes(_ticket(Status.replied, reply=reply)) is None
    assert (
        mapping.status_notes(_ticket(Status.reviewed, reply=reply))
        == "已修复，请张*拨打138****5678确认"
    )
    assert mapping.status_notes(_ticket(Status.closed, answer="已直接答复")) == "已直接答复"
    assert mapping.status_notes(_ticket(Status.merged)) == "与相同诉求的工单合并办理"
    row = mapping.public_request(
        _ticket(Status.closed), lead=mapping.Lead("城管局", None), service_name=None, tz=TZ
    )
    assert row["description"] == "张*说路灯坏了"
    assert row["agency_responsible"] == "城管局" and row["expected_datetime"] is None
    assert "caller_name" not in row and "caller_phone" not in row


def test_token_bucket_allows_a_burst_then_refills_with_time():
    bucket = TokenBucket(per_minute=60, burst=2)
    now = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert bucket.take("a", now) is None and bucket.take("a", now) is None
    assert bucket.take("a", now) == pytest.approx(1.0)
    assert bucket.take("b", now) is None  # one bucket per key
    assert bucket.take("a", now + timedelta(seconds=1)) is None
    assert bucket.take("a", now + timedelta(seconds=1)) is not None
