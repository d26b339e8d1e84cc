from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.factories import new_ticket
from tickets.models import Channel, RequestType, Status, Urgency
from tickets.service import close_at_intake

TICKETS = "/api/v1/tickets"
WATER_CUT = "幸福小区停水三天了，请尽快恢复供水"  # the rules send it to WATER, with HOUSING


def post(client, headers, key: str | None = None, **fields):
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return client.post(TICKETS, headers=headers, json={"description": "路灯不亮", **fields})


# ---------------------------------------------------------------- intake


def test_given_routable_request_when_created_then_201_with_ticket_and_its_assignments(client, auth):
    response = post(client, auth("operator"), description=WATER_CUT, caller_phone="13812345678")
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"\d{8}-\d{6}", body["ticket"]["number"])
    assert body["ticket"]["status"] == "dispatched"
    assert body["ticket"]["caller_phone"] == "13812345678"
    assert [(a["unit_code"], a["role"]) for a in body["assignments"]] == [
        ("WATER", "lead"),
        ("HOUSING", "co"),
    ]


def test_given_request_no_rule_routes_when_created_then_it_waits_in_the_manual_queue(client, auth):
    body = post(client, auth("operator")).json()
    assert body["ticket"]["status"] == "pending_dispatch"
    assert body["assignments"] == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"description": None}, "description"),
        ({"description": ""}, "description"),
        ({"urgency": "asap"}, "urgency"),
        ({"occurred_at": "2026-11-27T10:00:00"}, "occurred_at"),
        ({"caller_phone": "call me maybe"}, "caller_phone"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_given_invalid_payload_when_creating_then_422_naming_the_field(client, auth, fields, field):
    payload = {"description": "路灯不亮", **fields}
    response = client.post(
        TICKETS, headers=auth("operator"), json={k: v for k, v in payload.items() if v is not None}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in body["error"]["details"]]
    assert ["body", field] in [d["loc"] for d in body["detail"]]  # FastAPI's own shape


def test_given_body_that_is_not_json_when_creating_then_422(client, auth):
    response = client.post(
        TICKETS, headers={**auth("operator"), "Content-Type": "application/json"}, content="{"
    )
    assert response.status_code == 422


# ---------------------------------------------------------------- idempotency


def test_given_same_idempotency_key_when_posted_twice_then_one_ticket_and_200_replay(client, auth):
    first = post(client, auth("operator"), key="call-42", description=WATER_CUT)
    again = post(client, auth("operator"), key="call-42", description=WATER_CUT)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    listed = client.get(TICKETS, headers=auth("operator")).json()["items"]
    assert len(listed) == 1


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_given_empty_or_overlong_idempotency_key_when_posted_then_422_naming_it(client, auth, key):
    response = post(client, auth("operator"), key=key)
    assert response.status_code == 422
    [problem] = response.json()["error"]["details"]
    assert (problem["in"], problem["field"]) == ("header", "idempotency-key")


def test_given_reused_idempotency_key_with_other_payload_when_posted_then_409(client, auth):
    post(client, auth("operator"), key="call-42")
    response = post(client, auth("operator"), key="call-42", description="另一件事")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_given_same_key_from_two_users_when_posted_then_two_tickets(client, auth):
    mine = post(client, auth("operator"), key="k1").json()["ticket"]["id"]
    theirs = post(client, auth("dispatcher"), key="k1")
    assert theirs.status_code == 201
    assert theirs.json()["ticket"]["id"] != mine


# ---------------------------------------------------------------- listing


def test_given_120_tickets_when_paging_then_every_ticket_once_newest_first(
    client, auth, session, clock, world
):
    for n in range(120):
        if n % 3 == 0:  # three tickets share each instant: the id breaks the tie
            clock.advance(minutes=1)
        new_ticket(session, clock.now(), f"ticket {n}")
    session.commit()
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = client.get(TICKETS, headers=auth("operator"), params=params).json()
        seen += [(t["created_at"], t["id"]) for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 18
    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"cursor": "garbage"},
        {"created_from": "2026-11-27T10:00:00"},
        {"status": "lost"},
        {"category": "abc"},
    ],
)
def test_given_bad_list_parameters_when_listing_then_422(client, auth, params):
    response = client.get(TICKETS, headers=auth("operator"), params=params)
    assert response.status_code == 422, response.json()


@pytest.fixture
def assorted(session, clock, world):
    now = clock.now()
    made = {
        "water": new_ticket(
            session,
            now,
            "小区停水",
            district="榆阳区",
            urgency=Urgency.urgent,
            category_code="020301",
            caller_phone="13800000001",
        ),
        "wage": new_ticket(
            session,
            now + timedelta(hours=1),
            "拖欠工资",
            request_type=RequestType.complaint,
            category_code="040101",
            channel=Channel.phone,
        ),
        "lamp": new_ticket(
            session, now + timedelta(hours=2), "路灯不亮", district="横山区", category_code="030202"
        ),
    }
    close_at_intake(
        session, ticket=made["lamp"], answer="已报修", actor="t", now=now + timedelta(hours=2)
    )
    session.commit()
    return made


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["lamp", "wage", "water"]),
        ({"status": ["intake", "closed"]}, ["lamp", "wage", "water"]),
        ({"status": "closed"}, ["lamp"]),
        ({"urgency": "urgent"}, ["water"]),
        ({"district": "榆阳区"}, ["water"]),
        ({"category": "03"}, ["lamp"]),
        ({"category": "0403"}, []),
        ({"request_type": "complaint"}, ["wage"]),
        ({"channel": "phone"}, ["wage"]),
        ({"caller_phone": "13800000001"}, ["water"]),
        ({"q": "工资"}, ["wage"]),
        ({"created_from": "2026-11-27T11:00:00+08:00"}, ["lamp", "wage"]),
        ({"created_to": "2026-11-27T03:00:00Z"}, ["water"]),
    ],
)
def test_given_filters_when_listing_then_only_matching_tickets(
    client, auth, assorted, params, expected
):
    page = client.get(TICKETS, headers=auth("operator"), params=params).json()
    ids = {t.id: name for name, t in assorted.items()}
    assert [ids[t["id"]] for t in page["items"]] == expected


# ---------------------------------------------------------------- a handler's view


@pytest.fixture
def routed(client, auth):
    """One ticket the rules send to WATER (with HOUSING), one they send to HRSS."""
    water = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    wage = post(client, auth("operator"), description="公司拖欠工资三个月").json()["ticket"]
    return {"water": water, "wage": wage}


def test_given_handler_when_listing_then_only_their_units_tickets(client, auth, routed):
    def listed(who):
        return {t["id"] for t in client.get(TICKETS, headers=auth(who)).json()["items"]}

    assert listed("water.handler") == {routed["water"]["id"]}
    assert listed("housing.handler") == {routed["water"]["id"]}  # co-handling unit
    assert listed("hrss.handler") == {routed["wage"]["id"]}
    assert listed("yy.handler") == set()
    assert listed("operator") == {routed["water"]["id"], routed["wage"]["id"]}


def test_given_handler_when_reading_own_units_ticket_then_200(client, auth, routed):
    ticket = routed["water"]
    assert (
        client.get(f"{TICKETS}/{ticket['id']}", headers=auth("water.handler")).json()["id"]
        == ticket["id"]
    )
    by_number = client.get(f"{TICKETS}/by-number/{ticket['number']}", headers=auth("water.handler"))
    assert by_number.json()["id"] == ticket["id"]


@pytest.mark.parametrize(
    "path",
    ["/{id}", "/by-number/{number}", "/{id}/events", "/{id}/assignments", "/{id}/escalations"],
)
def test_given_other_units_ticket_when_handler_reads_it_then_404_like_a_missing_one(
    client, auth, routed, path
):
    wage = routed["wage"]
    response = client.get(
        TICKETS + path.format(id=wage["id"], number=wage["number"]), headers=auth("water.handler")
    )
    missing = client.get(
        TICKETS + path.format(id=999999, number="20990101-000001"), headers=auth("water.handler")
    )
    assert response.status_code == missing.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_given_any_ticket_when_handler_patches_it_then_403(client, auth, routed):
    for ticket in routed.values():
        response = client.patch(
            f"{TICKETS}/{ticket['id']}", headers=auth("water.handler"), json={"district": "榆阳区"}
        )
        assert response.status_code == 403


# ---------------------------------------------------------------- confidential callers


@pytest.fixture
def confidential(client, auth):
    return post(
        client,
        auth("operator"),
        description=WATER_CUT,
        caller_name="张三",
        caller_phone="13812345678",
        confidential=True,
    ).json()["ticket"]


def test_given_confidential_caller_when_handler_reads_then_name_and_phone_masked(
    client, auth, confidential
):
    ticket = client.get(f"{TICKETS}/{confidential['id']}", headers=auth("water.handler")).json()
    assert (ticket["caller_name"], ticket["caller_phone"]) == ("张*", "138****5678")
    listed = client.get(TICKETS, headers=auth("water.handler")).json()["items"]
    assert (listed[0]["caller_name"], listed[0]["caller_phone"]) == ("张*", "138****5678")
    events = client.get(
        f"{TICKETS}/{confidential['id']}/events", headers=auth("water.handler")
    ).json()
    assert "13812345678" not in str(events) and "张三" not in str(events)


@pytest.mark.parametrize("who", ["operator", "dispatcher", "supervisor", "admin"])
def test_given_confidential_caller_when_centre_staff_reads_then_in_clear(
    client, auth, who, confidential
):
    ticket = client.get(f"{TICKETS}/{confidential['id']}", headers=auth(who)).json()
    assert (ticket["caller_name"], ticket["caller_phone"]) == ("张三", "13812345678")


def test_given_handler_when_searching_by_caller_phone_then_403(client, auth, confidential):
    response = client.get(
        TICKETS, params={"caller_phone": "13812345678"}, headers=auth("water.handler")
    )
    assert response.status_code == 403
    found = client.get(
        TICKETS, params={"caller_phone": "13812345678"}, headers=auth("operator")
    ).json()["items"]
    assert [t["id"] for t in found] == [confidential["id"]]


def test_given_ordinary_caller_when_handler_reads_then_in_clear(client, auth):
    created = post(
        client,
        auth("operator"),
        description=WATER_CUT,
        caller_name="李四",
        caller_phone="13900000000",
    ).json()["ticket"]
    ticket = client.get(f"{TICKETS}/{created['id']}", headers=auth("water.handler")).json()
    assert (ticket["caller_name"], ticket["caller_phone"]) == ("李四", "13900000000")


# ---------------------------------------------------------------- edits and the audit


def test_given_correction_when_patched_then_changed_and_audited(client, auth):
    ticket = post(client, auth("operator")).json()["ticket"]
    url = f"{TICKETS}/{ticket['id']}"
    patched = client.patch(
        url, headers=auth("operator"), json={"district": "榆阳区", "urgency": "urgent"}
    )
    assert patched.status_code == 200
    assert (patched.json()["district"], patched.json()["urgency"]) == ("榆阳区", "urgent")
    unchanged = client.patch(url, headers=auth("operator"), json={"district": "榆阳区"})
    assert unchanged.status_code == 200
    events = client.get(f"{url}/events", headers=auth("operator")).json()
    assert [e["action"] for e in events] == ["create", "queue", "update"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[-1]["data"]["set"] == {"district": "榆阳区", "urgency": "urgent"}
    assert events[-1]["actor"] == "operator:operator"


@pytest.mark.parametrize(
    ("ticket_id", "payload", "status"),
    [
        (None, {"caller_phone": "nope"}, 422),
        (None, {"number": "x"}, 422),
        (999999, {"district": "x"}, 404),
    ],
)
def test_given_bad_patch_when_applied_then_refused(client, auth, ticket_id, payload, status):
    ticket_id = ticket_id or post(client, auth("operator")).json()["ticket"]["id"]
    response = client.patch(f"{TICKETS}/{ticket_id}", headers=auth("operator"), json=payload)
    assert response.status_code == status


def test_given_request_answered_at_intake_when_closed_then_closed_with_answer(client, auth):
    ticket = post(client, auth("operator"), description="公积金怎么提取").json()["ticket"]
    url = f"{TICKETS}/{ticket['id']}/close-at-intake"
    closed = client.post(
        url, headers=auth("operator"), json={"answer": "携带身份证到公积金中心办理"}
    )
    assert closed.status_code == 200
    assert (closed.json()["status"], closed.json()["answer"]) == (
        "closed",
        "携带身份证到公积金中心办理",
    )
    again = client.post(url, headers=auth("operator"), json={"answer": "再答一次"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "illegal_transition"
    blank = client.post(url, headers=auth("operator"), json={"answer": "   "})
    assert blank.status_code == 422


def test_given_duplicate_request_when_merged_then_child_follows_parent(client, auth):
    parent = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    child = post(client, auth("operator"), description=WATER_CUT + "（重复来电）").json()["ticket"]
    merged = client.post(
        f"{TICKETS}/{child['id']}/merge",
        headers=auth("operator"),
        json={"parent_id": parent["id"], "reason": "同一小区停水"},
    )
    assert merged.status_code == 200
    assert (merged.json()["status"], merged.json()["parent_id"]) == ("merged", parent["id"])
    child_assignments = client.get(
        f"{TICKETS}/{child['id']}/assignments", headers=auth("operator")
    ).json()
    assert {a["status"] for a in child_assignments} == {"withdrawn"}
    parent_events = client.get(f"{TICKETS}/{parent['id']}/events", headers=auth("operator"))
    assert parent_events.json()[-1]["data"]["kind"] == "merged_in"


@pytest.mark.parametrize(("target", "status"), [("self", 422), (999999, 404)])
def test_given_impossible_merge_when_asked_then_refused(client, auth, target, status):
    ticket = post(client, auth("operator")).json()["ticket"]
    parent_id = ticket["id"] if target == "self" else target
    response = client.post(
        f"{TICKETS}/{ticket['id']}/merge", headers=auth("operator"), json={"parent_id": parent_id}
    )
    assert response.status_code == status


def test_given_status_enum_when_listing_then_every_status_is_accepted(client, auth):
    params = {"status": [s.value for s in Status]}
    assert client.get(TICKETS, headers=auth("operator"), params=params).status_code == 200
