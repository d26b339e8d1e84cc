"""The public site's logic (hotline.public) on both backends: lookup codes, a web request
through the phone's intake (classified, dispatched, clocked, idempotent), its photos, the
public timeline and the sender's rating (dissatisfied reopens as the callback does), the
public list and GeoJSON without confidential requests or personal data, and the limiter."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import func, select
from sqlmodel import col

from core.errors import Conflict
from dispatch import handling, review
from dispatch.models import Assignment, AssignmentRole, Attachment
from hotline import public, public_limits
from hotline.attachments import AttachmentRefused, DirectoryStore, Limits, Upload
from tests.factories import build_world
from tickets import service as tickets
from tickets.models import Channel, Satisfaction, Status, Ticket

TZ = ZoneInfo("Asia/Shanghai")
SECRET = "test-secret-for-lookup-codes-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
LIMITS = public.photo_limits(Limits(max_bytes=10_000, types=frozenset({"png", "jpg", "pdf"})), 1024)
WATER_CUT = public.PublicRequest(
    category="090104",
    description="幸福小区停水三天了，请尽快恢复供水",
    address="榆阳区幸福小区3号楼",
    latitude=38.28531,
    longitude=109.73467,
    phone="13800001234",
)


@pytest.fixture
def world(session, clock):
    built = build_world(session, clock.now())
    session.flush()
    return built


def _submit(session, clock, tmp_path, request=WATER_CUT, photos=(), key="form-0001-abcdefgh"):
    return public.submit_request(
        session,
        request=request,
        photos=list(photos),
        store=DirectoryStore(tmp_path),
        limits=LIMITS,
        secret=SECRET,
        now=clock.now(),
        idempotency_key=key,
        tz=TZ,
    )


# ---------------------------------------------------------------- lookup codes


def test_given_a_number_then_its_code_is_six_unambiguous_characters_bound_to_number_and_secret():
    code = public.lookup_code(SECRET, "20261127-000001")
    assert len(code) == 6 and set(code) <= set(public.ALPHABET)
    assert not set(code) & set("01OIL")
    assert public.lookup_code(SECRET, "20261127-000001") == code
    assert public.lookup_code(SECRET, "20261127-000002") != code
    assert public.lookup_code(SECRET + "x", "20261127-000001") != code
    codes = {public.lookup_code(SECRET, f"20261127-{n:06d}") for n in range(2000)}
    assert len(codes) > 1990  # 31^6 ≈ 887 million: collisions are rare


def test_given_a_code_typed_loosely_then_it_still_matches_and_a_wrong_one_does_not():
    code = public.lookup_code(SECRET, "20261127-000001")
    loose = f" {code[:3].lower()}-{code[3:]} "
    assert public.code_matches(SECRET, "20261127-000001", loose)
    wrong = code[:-1] + ("2" if code[-1] != "2" else "3")
    assert not public.code_matches(SECRET, "20261127-000001", wrong)
    assert not public.code_matches(SECRET, "20261127-000001", "")
    assert not public.code_matches(SECRET, "20261127-000001", "中文中文中文")


def test_given_the_public_categories_then_each_is_a_category_of_the_centres_rule_pack():
    pack = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "dispatch/data/rules-zh.yaml").read_text("utf-8")
    )
    known = {
        (r["actions"].get("category_code"), r["actions"].get("category_name"))
        for r in pack["rules"]
    }
    assert set(public.CATEGORIES.items()) <= known


def test_given_an_address_then_the_district_it_names_if_any():
    districts = ["榆阳区", "横山区", "榆阳"]
    assert public.district_of("榆阳区人民路12号", districts) == "榆阳区"
    assert public.district_of("横山区政府门口", districts) == "横山区"
    assert public.district_of("人民路12号", districts) is None


# ---------------------------------------------------------------- through the intake


def test_given_a_web_request_then_classified_dispatched_and_clocked_like_a_call(
    session, clock, tmp_path, world
):
    done = _submit(session, clock, tmp_path, photos=[Upload("现场.png", PNG)])
    ticket = done.ticket
    assert done.created and done.code == public.lookup_code(SECRET, ticket.number)
    assert ticket.channel == Channel.web and ticket.status == Status.dispatched
    assert ticket.caller_phone == "13800001234" and not ticket.confidential
    assert (ticket.latitude, ticket.longitude) == (38.28531, 109.73467)
    assert ticket.district == "榆阳区"  # named in the address: one of the centre's districts
    # the world's rule 小区停水 classified it over the citizen's choice, and routed it
    assert (ticket.category_code, ticket.category_name) == ("020301", "供水")
    lead = session.scalars(
        select(Assignment).where(
            col(Assignment.ticket_id) == ticket.id, col(Assignment.role) == AssignmentRole.lead
        )
    ).one()
    assert lead.unit_id == world.units["WATER"].id and lead.sign_due_at > clock.now()
    photo = session.scalars(select(Attachment).where(col(Attachment.ticket_id) == ticket.id)).one()
    assert (photo.assignment_id, photo.filename, photo.uploaded_by) == (
        lead.id,
        "现场.png",
        "public",
    )
    assert DirectoryStore(tmp_path).get(photo.storage_key) == PNG
    notes = [e for e in tickets.events_of(session, ticket.id) if e.data.get("kind")]
    assert notes[-1].data["kind"] == "citizen_photos"
    assert notes[-1].data["photos"][0]["attachment_id"] == photo.id


def test_given_the_same_form_sent_twice_then_one_ticket_and_the_same_code(
    session, clock, tmp_path, world
):
    first = _submit(session, clock, tmp_path, photos=[Upload("a.png", PNG)])
    clock.advance(seconds=3)
    again = _submit(session, clock, tmp_path, photos=[Upload("a.png", PNG)])
    assert (again.ticket.id, again.code, again.created) == (first.ticket.id, first.code, False)
    assert session.scalar(select(func.count()).select_from(Ticket)) == 1
    assert session.scalar(select(func.count()).select_from(Attachment)) == 1
    other = _submit(session, clock, tmp_path, key="form-0002-abcdefgh")
    assert other.created and other.ticket.id != first.ticket.id
    changed = dataclasses.replace(WATER_CUT, description="另一件事：路灯不亮")
    with pytest.raises(Conflict):
        _submit(session, clock, tmp_path, request=changed)


def test_given_a_refused_photo_then_nothing_is_written(session, clock, tmp_path, world):
    with pytest.raises(AttachmentRefused) as refused:
        _submit(session, clock, tmp_path, photos=[Upload("ok.png", PNG), Upload("x.png", JPEG)])
    assert refused.value.problem == "type"
    with pytest.raises(AttachmentRefused) as big:
        _submit(session, clock, tmp_path, photos=[Upload("big.png", PNG + b"\x00" * 1024)])
    assert big.value.problem == "too_big"
    assert session.scalar(select(func.count()).select_from(Ticket)) == 0
    assert not list(tmp_path.rglob("*.png")) and not any(tmp_path.rglob("??/*"))


def test_given_anonymous_then_no_phone_is_kept_and_it_is_confidential(
    session, clock, tmp_path, world
):
    anonymous = dataclasses.replace(WATER_CUT, anonymous=True)
    ticket = _submit(session, clock, tmp_path, request=anonymous).ticket
    assert ticket.caller_phone is None and ticket.caller_name is None and ticket.confidential


def test_given_a_request_no_rule_routes_then_queued_and_its_photos_listed_on_the_record(
    session, clock, tmp_path, world
):
    odd = dataclasses.replace(WATER_CUT, category=public.OTHER, description="想咨询一下别的事情")
    ticket = _submit(session, clock, tmp_path, request=odd, photos=[Upload("p.png", PNG)]).ticket
    assert ticket.status == Status.pending_dispatch and ticket.category_code is None
    note = tickets.events_of(session, ticket.id)[-1]
    kept = note.data["photos"][0]
    assert note.data["kind"] == "citizen_photos" and kept["filename"] == "p.png"
    assert DirectoryStore(tmp_path).get(kept["storage_key"]) == PNG


# ---------------------------------------------------------------- following and rating


def test_given_number_and_code_or_phone_digits_then_found_otherwise_nothing(
    session, clock, tmp_path, world
):
    done = _submit(session, clock, tmp_path)
    number = done.ticket.number
    find = public.find_request
    assert find(session, secret=SECRET, number=number, code=done.code).id == done.ticket.id
    assert find(session, secret=SECRET, number=number, phone_last4="1234").id == done.ticket.id
    assert find(session, secret=SECRET, number=number, code="ABCDEF") is None
    assert find(session, secret=SECRET, number=number, phone_last4="9999") is None
    assert find(session, secret=SECRET, number=number, phone_last4="12") is None
    assert find(session, secret=SECRET, number=number) is None
    assert find(session, secret=SECRET, number="20991231-000001", code=done.code) is None
    assert find(session, secret=SECRET, number="' OR 1=1 --", code=done.code) is None
    anon = _submit(
        session,
        clock,
        tmp_path,
        request=dataclasses.replace(WATER_CUT, anonymous=True),
        key="form-anon-abcdefgh",
    )
    assert find(session, secret=SECRET, number=anon.ticket.number, phone_last4="1234") is None


def _replied(session, clock, world, ticket_id, text="已恢复供水，请您查看"):
    lead = session.scalars(
        select(Assignment).where(
            col(Assignment.ticket_id) == ticket_id,
            col(Assignment.role) == AssignmentRole.lead,
            col(Assignment.status) == "dispatched",
        )
    ).one()
    handling.sign(session, assignment_id=lead.id, actor=world.handlers["WATER"], now=clock.now())
    clock.advance(hours=2)
    handling.reply(
        session, assignment_id=lead.id, text=text, actor=world.handlers["WATER"], now=clock.now()
    )
    clock.advance(hours=1)
    review.review_reply(
        session,
        ticket_id=ticket_id,
        approve=True,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )


def test_given_a_request_through_its_life_then_the_public_timeline_shows_only_public_steps(
    session, clock, tmp_path, world
):
    ticket = _submit(session, clock, tmp_path).ticket
    view = public.public_view(session, ticket=ticket)
    assert [s.kind for s in view.steps] == ["received", "dispatched"]
    assert view.steps[1].unit == "自来水公司" and view.status == "in_progress"
    assert view.reply is None and not view.can_rate
    with pytest.raises(Conflict):
        public.rate(session, ticket=ticket, satisfaction=Satisfaction.satisfied, now=clock.now())

    _replied(session, clock, world, ticket.id)
    view = public.public_view(session, ticket=ticket)
    assert [s.kind for s in view.steps] == ["received", "dispatched", "replied"]
    assert view.reply == "已恢复供水，请您查看" and view.status == "replied" and view.can_rate
    shown = repr(view)
    assert "13800001234" not in shown and "handler" not in shown

    clock.advance(hours=1)
    public.rate(
        session,
        ticket=ticket,
        satisfaction=Satisfaction.dissatisfied,
        now=clock.now(),
        comment="还是没水",
    )
    assert ticket.status == Status.dispatched and ticket.reopen_count == 1
    live = session.scalars(
        select(Assignment).where(
            col(Assignment.ticket_id) == ticket.id, col(Assignment.status) == "dispatched"
        )
    ).all()
    assert {a.unit_id for a in live} >= {world.units["WATER"].id}
    callback = [e for e in tickets.events_of(session, ticket.id) if e.action == "callback"][-1]
    assert callback.to_status == Status.reopened and callback.reason == "还是没水"
    view = public.public_view(session, ticket=ticket)
    assert [s.kind for s in view.steps][-4:] == ["replied", "rated", "reopened", "dispatched"]
    assert view.steps[-3].satisfaction == "dissatisfied" and not view.can_rate

    clock.advance(days=1)
    _replied(session, clock, world, ticket.id, text="已更换水管，恢复供水")
    public.rate(session, ticket=ticket, satisfaction=Satisfaction.satisfied, now=clock.now())
    view = public.public_view(session, ticket=ticket)
    assert view.status == "closed" and view.steps[-1].kind == "closed"
    assert view.reply == "已更换水管，恢复供水" and view.satisfaction == "satisfied"


# ---------------------------------------------------------------- the public list and GeoJSON


def test_given_requests_then_the_list_and_geojson_leave_out_confidential_and_personal_data(
    session, clock, tmp_path, world
):
    shown = _submit(session, clock, tmp_path).ticket
    shown.district, shown.street = "榆阳区", "鼓楼街道"
    session.add(shown)
    _submit(
        session,
        clock,
        tmp_path,
        request=dataclasses.replace(WATER_CUT, confidential=True, latitude=38.5, longitude=109.5),
        key="form-conf-abcdefgh",
    )
    _submit(
        session,
        clock,
        tmp_path,
        request=dataclasses.replace(WATER_CUT, anonymous=True, latitude=38.6, longitude=109.6),
        key="form-anon-abcdefgh",
    )
    session.flush()
    items = public.recent_requests(session, now=clock.now(), tz=TZ)
    assert items == [
        public.PublicItem(
            category="供水",
            district="榆阳区",
            street="鼓楼街道",
            latitude=38.29,
            longitude=109.73,
            date="2026-11-27",
            status="in_progress",
        )
    ]
    feed = public.geojson(items)
    assert feed["type"] == "FeatureCollection" and len(feed["features"]) == 1
    feature = feed["features"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [109.73, 38.29]}
    assert set(feature["properties"]) == {"category", "district", "street", "date", "status"}
    text = repr(feed) + repr(items)
    for secret in ("13800001234", "幸福小区", "停水三天", shown.number):
        assert secret not in text
    clock.advance(days=public.RECENT_DAYS + 1)
    assert public.recent_requests(session, now=clock.now(), tz=TZ) == []


# ---------------------------------------------------------------- the limiter


def test_given_a_limiter_then_it_counts_per_key_forgets_old_hits_and_stays_bounded(clock):
    limiter = public_limits.Limiter(limit=2, window=timedelta(minutes=10), max_keys=3)
    now = clock.now()
    assert limiter.hit("a", now) and limiter.hit("a", now)
    assert not limiter.hit("a", now) and limiter.blocked("a", now)
    assert limiter.hit("b", now)
    assert limiter.hit("a", now + timedelta(minutes=10))  # the first two have aged out
    for n in range(100):
        limiter.hit(f"flood-{n}", now)
    assert len(limiter) == 3


def test_given_submission_limits_then_per_address_and_per_phone_across_addresses(clock):
    limits = public_limits.Limits(
        per_address=public_limits.Limiter(limit=3, window=timedelta(hours=1)),
        per_phone=public_limits.Limiter(limit=2, window=timedelta(days=1)),
    )
    now = clock.now()
    assert limits.allow_submission(address="1.1.1.1", phone="138-0000-1234", now=now)
    assert limits.allow_submission(address="2.2.2.2", phone="13800001234", now=now)
    assert not limits.allow_submission(address="3.3.3.3", phone="138 0000 1234", now=now)
    assert limits.allow_submission(address="1.1.1.1", phone=None, now=now)
    assert limits.allow_submission(address="1.1.1.1", phone="13900000000", now=now)
    assert not limits.allow_submission(address="1.1.1.1", phone=None, now=now)
    assert limits.allow_submission(address="1.1.1.1", phone=None, now=now + timedelta(hours=1))
