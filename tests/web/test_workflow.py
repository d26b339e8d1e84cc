from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from core.settings import Settings
from dispatch import escalation

API = "/api/v1"
WATER_CUT = "幸福小区停水三天了，请尽快恢复供水"  # the rules send it to WATER, with HOUSING
WAGES = "公司拖欠工资三个月"  # the rules send it to HRSS


def intake(client, auth, description: str) -> dict:
    response = client.post(
        f"{API}/tickets", headers=auth("operator"), json={"description": description}
    )
    assert response.status_code == 201, response.json()
    return response.json()


def lead_of(body: dict) -> dict:
    return next(
        a
        for a in body["assignments"]
        if a["role"] == "lead" and a["status"] not in ("withdrawn", "completed")
    )


def act(client, auth, who: str, path: str, json: dict | None = None, status: int = 200) -> dict:
    response = client.post(f"{API}{path}", headers=auth(who), json=json)
    assert response.status_code == status, response.json()
    return response.json()


def ticket(client, auth, ticket_id: int) -> dict:
    return client.get(f"{API}/tickets/{ticket_id}", headers=auth("operator")).json()


def test_given_routed_ticket_when_units_work_and_caller_is_satisfied_then_closed_and_archived(
    client, auth
):
    body = intake(client, auth, WATER_CUT)
    ticket_id = body["ticket"]["id"]
    lead = lead_of(body)["id"]
    co = next(a for a in body["assignments"] if a["role"] == "co")["id"]

    signed = act(client, auth, "water.handler", f"/assignments/{lead}/sign")
    assert signed["status"] == "signed" and signed["signed_at"] is not None
    act(client, auth, "water.handler", f"/assignments/{lead}/start")
    assert ticket(client, auth, ticket_id)["status"] == "in_progress"
    act(client, auth, "housing.handler", f"/assignments/{co}/sign")
    act(client, auth, "housing.handler", f"/assignments/{co}/reply", {"text": "已督促物业配合"})
    act(client, auth, "water.handler", f"/assignments/{lead}/reply", {"text": "管道已修复"})
    assert ticket(client, auth, ticket_id)["status"] == "replied"

    act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/review-reply",
        {"approve": False},
        status=422,
    )
    sent_back = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/review-reply",
        {"approve": False, "reason": "请说明恢复供水时间"},
    )
    assert sent_back["ticket"]["status"] == "in_progress"
    act(
        client,
        auth,
        "water.handler",
        f"/assignments/{lead}/reply",
        {"text": "管道已修复，今日18时恢复供水"},
    )
    reviewed = act(
        client, auth, "dispatcher", f"/tickets/{ticket_id}/review-reply", {"approve": True}
    )
    assert reviewed["ticket"]["status"] == "reviewed"

    closed = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/callback",
        {"satisfaction": "satisfied", "comment": "已恢复"},
    )
    assert (closed["ticket"]["status"], closed["ticket"]["satisfaction"]) == ("closed", "satisfied")
    assert {a["status"] for a in closed["assignments"]} == {"completed"}

    act(client, auth, "dispatcher", f"/tickets/{ticket_id}/archive", status=403)
    archived = act(client, auth, "supervisor", f"/tickets/{ticket_id}/archive")
    assert archived["ticket"]["status"] == "archived"


def test_given_another_units_assignment_when_handler_acts_on_it_then_404(client, auth):
    lead = lead_of(intake(client, auth, WATER_CUT))["id"]
    for path, body in [
        ("sign", None),
        ("start", None),
        ("reply", {"text": "x"}),
        ("return", {"reason_code": "other", "reason": "x"}),
        ("extensions", {"extend_by": 1, "extend_unit": "workdays", "reason": "x"}),
    ]:
        response = client.post(
            f"{API}/assignments/{lead}/{path}", headers=auth("hrss.handler"), json=body
        )
        assert response.status_code == 404, (path, response.json())


@pytest.mark.parametrize("who", ["operator", "dispatcher", "supervisor"])
def test_given_centre_staff_when_signing_for_a_unit_then_403(client, auth, who):
    lead = lead_of(intake(client, auth, WATER_CUT))["id"]
    assert client.post(f"{API}/assignments/{lead}/sign", headers=auth(who)).status_code == 403


def test_given_wrong_dispatch_when_unit_returns_it_then_centre_redispatches(client, auth):
    body = intake(client, auth, WAGES)
    ticket_id, lead = body["ticket"]["id"], lead_of(body)["id"]
    act(
        client,
        auth,
        "hrss.handler",
        f"/assignments/{lead}/return",
        {"reason_code": "nonsense", "reason": "x"},
        status=422,
    )
    returned = act(
        client,
        auth,
        "hrss.handler",
        f"/assignments/{lead}/return",
        {"reason_code": "wrong_mandate", "reason": "属于劳动监察，非本单位职能"},
    )
    assert returned["status"] == "returned"
    assert ticket(client, auth, ticket_id)["return_count"] == 1

    result = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/review-return",
        {"uphold": False, "lead_unit_code": "YY", "reason": "改派属地"},
    )
    assert result["ticket"]["status"] == "dispatched"
    assert [(a["unit_code"], a["status"]) for a in result["assignments"]] == [
        ("HRSS", "withdrawn"),
        ("YY", "dispatched"),
    ]
    assert (
        client.get(f"{API}/tickets/{ticket_id}", headers=auth("hrss.handler")).status_code == 200
    )  # a unit keeps seeing the history of its work


def test_given_return_upheld_when_reviewed_then_unit_keeps_the_ticket(client, auth):
    body = intake(client, auth, WAGES)
    ticket_id, lead = body["ticket"]["id"], lead_of(body)["id"]
    act(
        client,
        auth,
        "hrss.handler",
        f"/assignments/{lead}/return",
        {"reason_code": "wrong_locality", "reason": "不在本市"},
    )
    upheld = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/review-return",
        {"uphold": True, "reason": "属本单位职责"},
    )
    assert upheld["ticket"]["status"] == "dispatched"
    assert lead_of(upheld)["id"] == lead


def test_given_extension_asked_in_time_when_approved_then_deadline_moves(client, auth):
    lead = lead_of(intake(client, auth, WAGES))["id"]
    act(client, auth, "hrss.handler", f"/assignments/{lead}/sign")
    asked = act(
        client,
        auth,
        "hrss.handler",
        f"/assignments/{lead}/extensions",
        {"extend_by": 3, "extend_unit": "workdays", "reason": "需要调查取证"},
        status=201,
    )
    assert asked["status"] == "pending"
    queue = client.get(f"{API}/extensions", headers=auth("dispatcher")).json()
    assert [e["id"] for e in queue] == [asked["id"]]
    assert client.get(f"{API}/extensions", headers=auth("hrss.handler")).status_code == 403
    act(
        client,
        auth,
        "hrss.handler",
        f"/assignments/{lead}/extensions",
        {"extend_by": 0, "extend_unit": "workdays", "reason": "x"},
        status=422,
    )
    act(
        client,
        auth,
        "hrss.handler",
        f"/extensions/{asked['id']}/decision",
        {"approve": True},
        status=403,
    )
    decided = act(
        client,
        auth,
        "dispatcher",
        f"/extensions/{asked['id']}/decision",
        {"approve": True, "reason": "同意"},
    )
    assert decided["status"] == "approved"
    assert datetime.fromisoformat(decided["new_due_at"]) > datetime.fromisoformat(
        decided["old_due_at"]
    )
    act(
        client,
        auth,
        "dispatcher",
        f"/extensions/{asked['id']}/decision",
        {"approve": False},
        status=409,
    )
    assert client.get(f"{API}/extensions", headers=auth("dispatcher")).json() == []
    history = client.get(
        f"{API}/tickets/{asked['ticket_id']}/extensions", headers=auth("hrss.handler")
    ).json()
    assert [(e["id"], e["status"]) for e in history] == [(asked["id"], "approved")]


def test_given_unrouted_ticket_when_dispatched_by_hand_then_named_units_get_it(client, auth):
    body = intake(client, auth, "反映噪音扰民")
    ticket_id = body["ticket"]["id"]
    auto = act(client, auth, "dispatcher", f"/tickets/{ticket_id}/dispatch")
    assert (auto["queued"], auto["assignments"]) == (True, [])
    assert auto["explanation"]["fired"] is None
    assert auto["explanation"]["rules_total"] > 0
    act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/dispatch",
        {"co_unit_codes": ["URBAN"]},
        status=422,
    )
    act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/dispatch",
        {"lead_unit_code": "NOPE"},
        status=422,
    )
    manual = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/dispatch",
        {"lead_unit_code": "YY", "co_unit_codes": ["URBAN"], "reason": "属地+城管"},
    )
    assert manual["ticket"]["status"] == "dispatched"
    assert [(a["unit_code"], a["role"]) for a in manual["assignments"]] == [
        ("YY", "lead"),
        ("URBAN", "co"),
    ]


def _to_reviewed(client, auth) -> int:
    body = intake(client, auth, WAGES)
    ticket_id, lead = body["ticket"]["id"], lead_of(body)["id"]
    act(client, auth, "hrss.handler", f"/assignments/{lead}/sign")
    act(client, auth, "hrss.handler", f"/assignments/{lead}/reply", {"text": "已责令支付"})
    act(client, auth, "dispatcher", f"/tickets/{ticket_id}/review-reply", {"approve": True})
    return ticket_id


def test_given_dissatisfied_caller_when_called_back_then_reopened_to_the_same_unit(client, auth):
    ticket_id = _to_reviewed(client, auth)
    result = act(
        client,
        auth,
        "dispatcher",
        f"/tickets/{ticket_id}/callback",
        {"satisfaction": "dissatisfied", "comment": "工资仍未到账"},
    )
    assert (result["ticket"]["status"], result["ticket"]["reopen_count"]) == ("dispatched", 1)
    assert lead_of(result)["unit_code"] == "HRSS"


def test_given_unreachable_caller_when_closed_then_closed_and_supervisor_may_reopen(client, auth):
    ticket_id = _to_reviewed(client, auth)
    act(client, auth, "dispatcher", f"/tickets/{ticket_id}/close", {"reason": ""}, status=422)
    closed = act(
        client, auth, "dispatcher", f"/tickets/{ticket_id}/close", {"reason": "三次回访未接通"}
    )
    assert closed["ticket"]["status"] == "closed"
    act(client, auth, "dispatcher", f"/tickets/{ticket_id}/reopen", {"reason": "x"}, status=403)
    reopened = act(
        client, auth, "supervisor", f"/tickets/{ticket_id}/reopen", {"reason": "市民投诉处理结果"}
    )
    assert reopened["ticket"]["status"] == "dispatched"


def test_given_illegal_step_when_asked_then_409(client, auth):
    ticket_id = intake(client, auth, WAGES)["ticket"]["id"]
    response = client.post(
        f"{API}/tickets/{ticket_id}/review-reply",
        headers=auth("dispatcher"),
        json={"approve": True},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"


# ---------------------------------------------------------------- escalations


def test_given_unsigned_ticket_past_its_deadline_when_swept_then_units_see_and_ack_it(
    client, auth, session_factory, clock
):
    body = intake(client, auth, WATER_CUT)
    ticket_id = body["ticket"]["id"]
    assert client.get(f"{API}/escalations", headers=auth("water.handler")).json() == []
    clock.advance(timedelta(days=3))
    fired = escalation.sweep(
        session_factory, now=clock.now(), settings=Settings(environment="test")
    )
    assert fired.fired > 0

    mine = client.get(
        f"{API}/escalations", headers=auth("water.handler"), params={"unacknowledged": True}
    ).json()
    assert mine and {e["ticket_id"] for e in mine} == {ticket_id}
    on_ticket = client.get(
        f"{API}/tickets/{ticket_id}/escalations", headers=auth("housing.handler")
    ).json()
    assert {e["id"] for e in mine} <= {e["id"] for e in on_ticket}  # linked: co units see it

    acked = act(client, auth, "water.handler", f"/escalations/{mine[0]['id']}/ack")
    assert acked["acknowledged_at"] is not None
    act(client, auth, "hrss.handler", f"/escalations/{mine[0]['id']}/ack", status=404)
    remaining = client.get(
        f"{API}/escalations", headers=auth("water.handler"), params={"unacknowledged": True}
    ).json()
    assert mine[0]["id"] not in {e["id"] for e in remaining}
