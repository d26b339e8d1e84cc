from __future__ import annotations

POLICIES = "/api/v1/sla-policies"
DAYS = "/api/v1/calendar/days"


def test_given_default_policies_when_listed_then_every_user_may_read_them(client, auth):
    names = [p["name"] for p in client.get(POLICIES, headers=auth("water.handler")).json()]
    assert "general" in names


def test_given_admin_when_managing_a_policy_then_created_changed_and_deactivated(client, auth):
    created = client.post(
        POLICIES,
        headers=auth("admin"),
        json={
            "name": "heating-24h",
            "category_prefix": "0204",
            "reply_limit": 24,
            "reply_unit": "hours",
        },
    )
    assert created.status_code == 201
    policy_id = created.json()["id"]
    assert (
        client.post(POLICIES, headers=auth("admin"), json={"name": "heating-24h"}).status_code
        == 409
    )
    patched = client.patch(
        f"{POLICIES}/{policy_id}", headers=auth("admin"), json={"reply_limit": 12}
    )
    assert patched.json()["reply_limit"] == 12
    deleted = client.delete(f"{POLICIES}/{policy_id}", headers=auth("admin"))
    assert deleted.json()["active"] is False
    active = client.get(POLICIES, headers=auth("admin"), params={"active_only": True}).json()
    assert policy_id not in [p["id"] for p in active]


def test_given_bad_policy_when_created_then_422_naming_the_field(client, auth):
    response = client.post(POLICIES, headers=auth("admin"), json={"name": "x", "sign_limit": 0})
    assert response.status_code == 422
    assert "sign_limit" in [d["field"] for d in response.json()["error"]["details"]]


def test_given_fallback_policy_when_deactivated_then_409(client, auth):
    general = next(
        p for p in client.get(POLICIES, headers=auth("admin")).json() if p["name"] == "general"
    )
    assert client.delete(f"{POLICIES}/{general['id']}", headers=auth("admin")).status_code == 409


def test_given_non_admin_when_changing_policies_then_403(client, auth):
    assert client.post(POLICIES, headers=auth("supervisor"), json={"name": "x"}).status_code == 403


def test_given_calendar_overrides_when_managed_then_listed_by_year(client, auth):
    put = client.put(
        f"{DAYS}/2027-02-07", headers=auth("admin"), json={"is_workday": True, "name": "春节调休"}
    )
    assert put.status_code == 200
    imported = client.post(
        f"{DAYS}/import",
        headers=auth("admin"),
        json={"text": "2027-02-10..2027-02-12 holiday 春节"},
    )
    assert len(imported.json()) == 3
    days = client.get(DAYS, headers=auth("operator"), params={"year": 2027}).json()
    assert [(d["day"], d["is_workday"]) for d in days] == [
        ("2027-02-07", True),
        ("2027-02-10", False),
        ("2027-02-11", False),
        ("2027-02-12", False),
    ]
    assert client.delete(f"{DAYS}/2027-02-07", headers=auth("admin")).status_code == 204
    assert client.delete(f"{DAYS}/2027-02-07", headers=auth("admin")).status_code == 404


def test_given_bad_calendar_import_when_posted_then_422_and_nothing_stored(client, auth):
    response = client.post(
        f"{DAYS}/import",
        headers=auth("admin"),
        json={"text": "2027-05-01 holiday\n2027-05-02 sometimes"},
    )
    assert response.status_code == 422
    assert "line 2" in response.json()["error"]["message"]
    assert client.get(DAYS, headers=auth("admin"), params={"year": 2027}).json() == []


def test_given_naive_or_bad_day_when_put_then_422(client, auth):
    response = client.put(f"{DAYS}/2027-13-01", headers=auth("admin"), json={"is_workday": True})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["in"] == "path"


def test_given_a_year_chinese_calendar_knows_then_holidays_and_makeup_days_are_listed(client, auth):
    body = client.get("/api/v1/calendar/years/2026", headers=auth("operator")).json()
    assert body["known"] is True
    holidays = {h["day"]: h["name"] for h in body["holidays"]}
    assert holidays["2026-10-01"] == "国庆节"
    assert any(m["name"] and m["name"].endswith("调休") for m in body["makeup_workdays"])


def test_given_a_year_not_loaded_when_admin_enters_its_holidays_then_it_becomes_known(client, auth):
    before = client.get("/api/v1/calendar/years/2027", headers=auth("operator")).json()
    assert before == {
        "year": 2027,
        "known": False,
        "holidays": [],
        "makeup_workdays": [],
        "confirmed": False,
    }
    put = client.put(
        "/api/v1/calendar/days/2027-01-01",
        headers=auth("admin"),
        json={"is_workday": False, "name": "元旦"},
    )
    assert put.status_code == 200
    after = client.get("/api/v1/calendar/years/2027", headers=auth("operator")).json()
    assert after["known"] is True
    assert after["holidays"] == [{"day": "2027-01-01", "name": "元旦"}]
    assert client.get("/api/v1/calendar/years/1999", headers=auth("operator")).status_code == 422
