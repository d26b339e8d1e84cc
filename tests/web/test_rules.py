from __future__ import annotations

import pytest
import yaml

RULES = "/api/v1/rules"
NOISE = {
    "name": "噪音扰民",
    "priority": 50,
    "conditions": {"text_any": ["噪音"]},
    "actions": {"category_code": "030301", "lead_unit": "YY"},
}


def rule_id(client, auth, name: str) -> int:
    return next(
        r["id"] for r in client.get(RULES, headers=auth("admin")).json() if r["name"] == name
    )


def intake(client, auth, description: str) -> dict:
    return client.post(
        "/api/v1/tickets", headers=auth("operator"), json={"description": description}
    ).json()


def test_given_rules_when_listed_by_centre_staff_then_in_evaluation_order(client, auth):
    rules = client.get(RULES, headers=auth("operator")).json()
    assert [r["name"] for r in rules] == ["欠薪", "小区停水", "占道经营", "物业分类"]
    assert client.get(RULES, headers=auth("water.handler")).status_code == 403


def test_given_new_rule_when_created_then_the_next_intake_follows_it(client, auth):
    assert intake(client, auth, "楼下KTV噪音很大")["ticket"]["status"] == "pending_dispatch"
    created = client.post(RULES, headers=auth("admin"), json=NOISE)
    assert created.status_code == 201
    assert created.json()["pack"] == "custom"
    routed = intake(client, auth, "楼下KTV噪音很大")
    assert [a["unit_code"] for a in routed["assignments"]] == ["YY"]
    assert client.post(RULES, headers=auth("admin"), json=NOISE).status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"conditions": {"text_any": [""]}}, "conditions.text_any.0"),
        ({"conditions": {"colour": "red"}}, "conditions.colour"),
        ({"actions": {"lead_unit": "bad code!"}}, "actions.lead_unit"),
    ],
)
def test_given_malformed_rule_when_created_then_422_naming_the_field(client, auth, change, field):
    response = client.post(RULES, headers=auth("admin"), json={**NOISE, **change})
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


def test_given_rule_naming_unknown_unit_when_created_then_422(client, auth):
    response = client.post(
        RULES, headers=auth("admin"), json={**NOISE, "actions": {"lead_unit": "NOPE"}}
    )
    assert response.status_code == 422
    assert "NOPE" in response.json()["error"]["message"]


def test_given_disabled_rule_when_intake_matches_it_then_ticket_waits_for_dispatch(client, auth):
    wages = rule_id(client, auth, "欠薪")
    patched = client.patch(f"{RULES}/{wages}", headers=auth("admin"), json={"enabled": False})
    assert patched.json()["enabled"] is False
    assert intake(client, auth, "公司拖欠工资")["ticket"]["status"] == "pending_dispatch"


def test_given_rule_when_deleted_then_gone(client, auth):
    wages = rule_id(client, auth, "欠薪")
    assert client.delete(f"{RULES}/{wages}", headers=auth("admin")).status_code == 204
    assert client.get(f"{RULES}/{wages}", headers=auth("admin")).status_code == 404
    assert client.delete(f"{RULES}/{wages}", headers=auth("admin")).status_code == 404


def test_given_text_when_dry_run_then_the_firing_rule_and_why(client, auth):
    response = client.post(
        f"{RULES}/dry-run",
        headers=auth("dispatcher"),
        json={"text": "我们小区停水了", "local_time": "22:30"},
    )
    assert response.status_code == 200
    assert response.json()["fired"]["rule"] == "小区停水"
    assert response.json()["actions"]["lead_unit"] == "WATER"


def test_given_exported_pack_when_imported_back_then_nothing_changes(client, auth):
    exported = client.get(f"{RULES}/export", headers=auth("admin"), params={"pack": "custom"})
    assert exported.headers["content-type"].startswith("application/yaml")
    assert len(yaml.safe_load(exported.text)["rules"]) == 4
    imported = client.post(
        f"{RULES}/import", headers=auth("admin"), json={"text": exported.text, "replace": True}
    )
    assert imported.json() == {"created": 0, "updated": 0, "unchanged": 4, "deleted": 0}
    as_json = client.get(f"{RULES}/export", headers=auth("admin"), params={"format": "json"})
    assert as_json.json()["pack"] == "all"


def test_given_pack_with_a_bad_rule_when_imported_then_422_and_nothing_written(client, auth):
    pack = {
        "pack": "noise",
        "version": 1,
        "rules": [NOISE, {**NOISE, "name": "坏规则", "actions": {}}],
    }
    response = client.post(
        f"{RULES}/import",
        headers=auth("admin"),
        json={"text": yaml.safe_dump(pack, allow_unicode=True)},
    )
    assert response.status_code == 422
    assert "坏规则" in response.json()["error"]["message"]
    assert "噪音扰民" not in [r["name"] for r in client.get(RULES, headers=auth("admin")).json()]
