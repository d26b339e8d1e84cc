"""Open311 GeoReport v2 over HTTP: XML (parsed with xml.etree, element names checked against
the spec) and JSON, errors in the spec's format, API keys, confidentiality and the 90-day
window. The filing itself (classification, dispatch, clocks) is tests/hotline/test_open311.py's."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree as ET

import pytest
from sqlmodel import select

from accounts.models import User
from accounts.signin import set_password
from dispatch.models import Assignment
from hotline import intake
from hotline.open311 import clients
from hotline.open311.limits import PostLimits, TokenBucket
from tests.web.test_pages_signin import PASSWORD, _csrf, sign_in
from tickets.models import Channel, Ticket, TicketCreate

V2 = "/open311/v2"
# The spec's elements (wiki.open311.org/GeoReport_v2), in its order.
SERVICE = [
    "service_code",
    "service_name",
    "description",
    "metadata",
    "type",
    "keywords",
    "group",
]
ATTRIBUTE = [
    "variable",
    "code",
    "datatype",
    "required",
    "datatype_description",
    "order",
    "description",
]
REQUEST = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]
DATATYPES = {"string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"}


@pytest.fixture
def key(session, world, clock) -> str:
    _, made = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    return made


def _xml(response) -> ET.Element:
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(response.content)


def _errors_xml(response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    root = _xml(response)
    assert root.tag == "errors"
    found = []
    for error in root:
        assert error.tag == "error" and [c.tag for c in error] == ["code", "description"]
        assert error.findtext("code") == str(status)
        found.append(error.findtext("description") or "")
    assert found
    return found


def _errors_json(response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert isinstance(body, list) and body
    assert all(set(e) == {"code", "description"} and e["code"] == status for e in body)
    return [e["description"] for e in body]


WAGES = {
    "service_code": "040101",
    "lat": "38.2852",
    "long": "109.7345",
    "address_string": "榆林市榆阳区新建路",
    "description": "工地老板拖欠工资三个月，联系人张三丰 13812345678",
    "first_name": "三丰",
    "last_name": "张",
    "phone": "13812345678",
    "email": "zhang@example.org",
    "attribute[URGENCY]": "urgent",
    "attribute[ADDRESS_DETAIL]": "3号楼2单元",
}


def _post(client, key: str, fmt: str = "xml", **changes: str):
    data = {**WAGES, "api_key": key, **changes}
    return client.post(f"{V2}/requests.{fmt}", data={k: v for k, v in data.items() if v})


def test_discovery_names_the_endpoint_its_formats_and_the_spec(client):
    root = _xml(client.get(f"{V2}/discovery.xml"))
    assert root.tag == "discovery"
    endpoint = root.find("endpoints/endpoint")
    assert endpoint is not None
    assert endpoint.findtext("specification") == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint.findtext("url", "").endswith("/open311/v2")
    assert [f.text for f in endpoint.findall("formats/format")] == ["text/xml", "application/json"]
    body = client.get(f"{V2}/discovery.json").json()
    assert body["endpoints"][0]["formats"] == ["text/xml", "application/json"]


def test_services_are_the_rule_packs_categories_in_xml_and_json(client, world):
    root = _xml(client.get(f"{V2}/services.xml"))
    assert root.tag == "services"
    rows = list(root)
    assert {r.tag for r in rows} == {"service"}
    for row in rows:
        assert [c.tag for c in row] == SERVICE
        assert row.findtext("metadata") == "true" and row.findtext("type") == "realtime"
    codes = {r.findtext("service_code"): r.findtext("service_name") for r in rows}
    # tests.factories.RULES: every enabled rule that classifies is a service
    assert codes == {
        "020101": "物业管理",
        "020301": "供水",
        "030201": "市容秩序",
        "040101": "劳动报酬",
    }
    wages = next(r for r in rows if r.findtext("service_code") == "040101")
    assert wages.findtext("keywords") == "拖欠工资, 欠薪, 讨薪"
    assert wages.findtext("group") == "04"
    listed = client.get(f"{V2}/services.json").json()
    assert [s["service_code"] for s in listed] == sorted(codes)
    assert list(listed[0]) == SERVICE and listed[0]["metadata"] is True


def test_service_definition_lists_its_attributes_with_their_values(client, world):
    root = _xml(client.get(f"{V2}/services/040101.xml"))
    assert root.tag == "service_definition"
    assert [c.tag for c in root] == ["service_code", "attributes"]
    attributes = root.findall("attributes/attribute")
    assert [a.findtext("code") for a in attributes] == [
        "ADDRESS_DETAIL",
        "URGENCY",
        "REQUEST_TYPE",
        "OCCURRED_AT",
    ]
    for attribute in attributes:
        tags = [c.tag for c in attribute]
        assert tags[: len(ATTRIBUTE)] == ATTRIBUTE
        assert attribute.findtext("datatype") in DATATYPES
        if attribute.findtext("datatype") == "singlevaluelist":
            assert tags[len(ATTRIBUTE) :] == ["values"]
            for value in attribute.findall("values/value"):
                assert [c.tag for c in value] == ["key", "name"]
    urgency = attributes[1]
    assert urgency.findtext("description") == "紧急程度"
    assert [(v.findtext("key"), v.findtext("name")) for v in urgency.findall("values/value")] == [
        ("normal", "一般"),
        ("urgent", "紧急"),
        ("very_urgent", "特急"),
    ]
    assert attributes[0].findtext("description") == "详细地址"
    body = client.get(f"{V2}/services/040101.json").json()
    assert body["service_code"] == "040101"
    assert body["attributes"][1]["values"][2] == {"key": "very_urgent", "name": "特急"}
    assert _errors_json(client.get(f"{V2}/services/999999.json"), 404)


def test_post_files_a_ticket_dispatched_like_a_call_and_reads_back_without_personal_data(
    client, session, world, key
):
    response = _post(client, key)
    assert response.status_code == 201, response.text
    root = _xml(response)
    assert root.tag == "service_requests"
    posted = root.find("request")
    assert posted is not None
    assert [c.tag for c in posted] == [
        "service_request_id",
        "token",
        "service_notice",
        "account_id",
    ]
    number = posted.findtext("service_request_id")
    assert "人力资源和社会保障局" in (posted.findtext("service_notice") or "")

    ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
    assert ticket.channel == Channel.open311
    assert (ticket.caller_name, ticket.caller_phone) == ("张三丰", "13812345678")
    assert ticket.address == "榆林市榆阳区新建路 3号楼2单元"
    assert (ticket.latitude, ticket.longitude) == (38.2852, 109.7345)
    assert ticket.urgency.value == "urgent"
    lead = session.exec(select(Assignment).where(Assignment.ticket_id == ticket.id)).one()
    assert lead.unit_id == world.units["HRSS"].id and lead.close_due_at is not None

    token = posted.findtext("token")
    resolved = _xml(client.get(f"{V2}/tokens/{token}.xml")).find("request")
    assert resolved is not None
    assert resolved.findtext("service_request_id") == number
    assert resolved.findtext("token") == token
    _errors_xml(client.get(f"{V2}/tokens/1.nothing.xml"), 404)

    for fmt in ("xml", "json"):
        response = client.get(f"{V2}/requests/{number}.{fmt}")
        assert response.status_code == 200
        text = response.content.decode("utf-8")
        for personal in ("13812345678", "张三丰", "三丰", "zhang@example.org"):
            assert personal not in text
    row = _xml(client.get(f"{V2}/requests/{number}.xml")).find("request")
    assert row is not None
    assert [c.tag for c in row] == REQUEST
    assert row.findtext("status") == "open"
    assert row.findtext("agency_responsible") == "人力资源和社会保障局"
    assert row.findtext("service_code") == "040101"
    assert row.findtext("service_name") == "劳动报酬"
    assert row.findtext("requested_datetime") == "2026-11-27T10:00:00+08:00"
    assert row.findtext("expected_datetime", "").endswith("+08:00")
    assert row.findtext("lat") == "38.2852" and row.findtext("long") == "109.7345"
    assert "138****5678" in (row.findtext("description") or "")
    (one,) = client.get(f"{V2}/requests/{number}.json").json()
    assert list(one) == REQUEST
    assert one["lat"] == 38.2852 and one["status_notes"] is None


def test_json_post_answers_json(client, world, key):
    response = _post(client, key, "json", service_code="020301", description="小区停水两天了")
    assert response.status_code == 201
    (made,) = response.json()
    assert set(made) == {"service_request_id", "token", "service_notice", "account_id"}
    (read,) = client.get(f"{V2}/requests/{made['service_request_id']}.json").json()
    assert read["agency_responsible"] == "自来水公司" and read["service_code"] == "020301"


def test_missing_unknown_and_revoked_keys_are_403_in_the_asked_format(
    client, session, world, key, clock
):
    assert "api_key" in _errors_xml(_post(client, ""), 403)[0]
    _errors_json(_post(client, "not-a-key", "json"), 403)
    (client_row,) = clients.list_clients(session)
    clients.revoke(session, client_id=client_row.id, actor="admin:test", now=clock.now())
    session.commit()
    _errors_xml(_post(client, key), 403)
    assert session.exec(select(Ticket)).all() == []


def test_bad_attributes_and_location_are_400_each_named(client, world, key):
    problems = _errors_xml(
        _post(
            client,
            key,
            **{"attribute[URGENCY]": "很急", "attribute[COLOUR]": "red", "lat": "91"},
        ),
        400,
    )
    joined = " | ".join(problems)
    assert "attribute[URGENCY]" in joined and "很急" in joined
    assert "attribute[COLOUR]" in joined
    assert "lat" in joined
    assert len(problems) == 3
    problems = _errors_json(
        _post(client, key, "json", lat="", long="", address_string="", phone="abc"), 400
    )
    assert any("location" in p for p in problems)
    problems = _errors_json(_post(client, key, "json", service_code="999999"), 404)
    assert "999999" in problems[0]
    problems = _errors_json(_post(client, key, "json", **{"attribute[OCCURRED_AT]": "昨天"}), 400)
    assert "attribute[OCCURRED_AT]" in problems[0]
    problems = _errors_json(_post(client, key, "json", phone="call me"), 400)
    assert problems[0].startswith("phone")


def _seed(session, clock, *, days_ago: float, confidential: bool = False, text: str = "拖欠工资"):
    submission = intake.submit(
        session,
        data=TicketCreate(
            channel=Channel.phone,
            description=text,
            caller_name="李四",
            caller_phone="13900001111",
            confidential=confidential,
        ),
        actor=None,
        now=clock.now() - timedelta(days=days_ago),
    )
    session.commit()
    return submission.ticket.number


def test_confidential_requests_never_appear(client, session, world, clock):
    hidden = _seed(session, clock, days_ago=1, confidential=True)
    shown = _seed(session, clock, days_ago=1)
    _errors_xml(client.get(f"{V2}/requests/{hidden}.xml"), 404)
    listed = [r["service_request_id"] for r in client.get(f"{V2}/requests.json").json()]
    assert listed == [shown]
    by_id = client.get(f"{V2}/requests.json", params={"service_request_id": f"{hidden},{shown}"})
    assert [r["service_request_id"] for r in by_id.json()] == [shown]
    text = client.get(f"{V2}/requests.xml").text
    assert hidden not in text and "李四" not in text and "13900001111" not in text


def test_requests_keep_to_a_window_of_at_most_90_days(client, session, world, clock):
    old = _seed(session, clock, days_ago=100)
    recent = _seed(session, clock, days_ago=10, text="小区停水")
    ids = [r["service_request_id"] for r in client.get(f"{V2}/requests.json").json()]
    assert ids == [recent]  # the default window: the last 90 days
    earlier = client.get(
        f"{V2}/requests.json",
        params={"start_date": "2026-08-01T00:00:00+08:00", "end_date": "2026-08-31T00:00:00Z"},
    ).json()
    assert [r["service_request_id"] for r in earlier] == [old]
    problems = _errors_xml(
        client.get(
            f"{V2}/requests.xml",
            params={"start_date": "2026-06-01T00:00:00Z", "end_date": "2026-09-01T00:00:00Z"},
        ),
        400,
    )
    assert "90 days" in problems[0]
    _errors_json(client.get(f"{V2}/requests.json", params={"start_date": "2026-06-01"}), 400)
    _errors_json(client.get(f"{V2}/requests.json", params={"status": "pending"}), 400)
    by_code = client.get(f"{V2}/requests.json", params={"service_code": "020301"}).json()
    assert [r["service_request_id"] for r in by_code] == [recent]
    assert client.get(f"{V2}/requests.json", params={"status": "closed"}).json() == []
    opened = client.get(f"{V2}/requests.json", params={"status": "open"}).json()
    assert [r["service_request_id"] for r in opened] == [recent]


def test_unknown_resources_formats_and_jurisdictions_are_404_in_the_spec_format(client, world):
    _errors_xml(client.get(f"{V2}/services.yaml"), 404)
    _errors_xml(client.get(f"{V2}/nothing.xml"), 404)
    _errors_json(client.get(f"{V2}/requests/20261127-999999.json"), 404)
    _errors_json(client.get(f"{V2}/services.json", params={"jurisdiction_id": "other"}), 404)
    assert client.get(f"{V2}/services.json", params={"jurisdiction_id": "12345"}).status_code == 200


def test_posts_over_the_rate_limit_are_429_and_file_nothing(
    client, app, session, world, key, clock
):
    app.state.open311_limits = PostLimits(TokenBucket(60, 2), TokenBucket(60, 100))
    assert _post(client, key).status_code == 201
    assert _post(client, key).status_code == 201
    refused = _post(client, key)
    assert _errors_xml(refused, 429)[0].startswith("too many requests from this api_key")
    assert refused.headers["retry-after"] == "1"
    assert len(session.exec(select(Ticket)).all()) == 2
    clock.advance(timedelta(seconds=1))
    assert _post(client, key).status_code == 201
    app.state.open311_limits = PostLimits(TokenBucket(600, 100), TokenBucket(60, 1))
    assert _post(client, key).status_code == 201
    assert "client address" in _errors_json(_post(client, key, "json"), 429)[0]


def test_public_reply_becomes_status_notes_once_the_centre_approved_it(
    client, session, world, key, clock
):
    from dispatch import handling, review

    number = _xml(_post(client, key)).findtext("request/service_request_id")
    ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
    lead = session.exec(select(Assignment).where(Assignment.ticket_id == ticket.id)).one()
    handler = world.handlers["HRSS"]
    handling.sign(session, assignment_id=lead.id, actor=handler, now=clock.now())
    handling.reply(
        session,
        assignment_id=lead.id,
        text="已责令用工单位于本月底前结清工资，张三丰可拨打13812345678回访",
        actor=handler,
        now=clock.now(),
    )
    session.commit()
    (row,) = client.get(f"{V2}/requests/{number}.json").json()
    assert row["status_notes"] is None  # not yet reviewed by the centre
    review.review_reply(
        session, ticket_id=ticket.id, approve=True, actor=world.staff["dispatcher"], now=clock.now()
    )
    session.commit()
    (row,) = client.get(f"{V2}/requests/{number}.json").json()
    assert row["status"] == "open"
    assert row["status_notes"].startswith("已责令用工单位于本月底前结清工资")
    assert "13812345678" not in row["status_notes"] and "张三丰" not in row["status_notes"]


@pytest.fixture
def admin(client, session, world, clock):
    user = session.exec(select(User).where(User.username == "admin")).one()
    set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    assert sign_in(client, "admin").status_code == 303
    return client


def test_admin_issues_a_key_shown_once_and_revokes_it(admin, session, clock):
    token = _csrf(admin.get("/admin/open311").text)
    page = admin.post("/admin/open311", data={"csrf_token": token, "name": "街道网格 App"})
    assert page.status_code == 200
    start = page.text.index('<code class="secret">') + len('<code class="secret">')
    issued = page.text[start : page.text.index("</code>", start)]
    (row,) = clients.list_clients(session)
    assert row.name == "街道网格 App" and row.created_by == "admin:admin"
    assert issued not in row.key_hash and len(row.key_hash) == 64
    assert issued not in admin.get("/admin/open311").text
    assert clients.authenticate(session, key=issued, now=clock.now()) is not None
    # the web process has taken the key, and remembers it (hotline.open311.clients) ...
    assert _post(admin, issued, fmt="json").status_code == 201
    refused = admin.post("/admin/open311", data={"csrf_token": token, "name": "  "})
    assert refused.status_code == 422
    done = admin.post(
        f"/admin/open311/{row.id}/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303
    session.expire_all()
    assert clients.authenticate(session, key=issued, now=clock.now()) is None
    # ... yet refuses it from the next request on, on the same frozen clock
    assert _errors_json(_post(admin, issued, fmt="json"), 403)
    again = admin.post(f"/admin/open311/{row.id}/revoke", data={"csrf_token": token})
    assert again.status_code == 409


def test_text_xml_cannot_carry_is_left_out_so_the_answer_still_parses(client, world, key):
    number = _xml(_post(client, key, description="拖欠工资\x07三个月\x1b")).findtext(
        "request/service_request_id"
    )
    row = _xml(client.get(f"{V2}/requests/{number}.xml")).find("request")
    assert row is not None and row.findtext("description") == "拖欠工资三个月"
    (one,) = client.get(f"{V2}/requests/{number}.json").json()
    assert one["description"] == "拖欠工资\x07三个月\x1b"
