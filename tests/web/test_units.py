from __future__ import annotations

import pytest

UNITS = "/api/v1/units"


def test_given_any_user_when_listing_units_then_flat_by_code(client, auth):
    units = client.get(UNITS, headers=auth("yy.handler")).json()
    assert [u["code"] for u in units] == sorted(
        ["CENTRE", "HRSS", "HOUSING", "WATER", "URBAN", "YY"]
    )
    assert all("children" not in u for u in units)


def test_given_street_under_district_when_listing_as_tree_then_nested(client, auth):
    created = client.post(
        UNITS,
        headers=auth("admin"),
        json={"code": "YY-XR", "name": "新人街道", "level": "street", "parent_code": "YY"},
    )
    assert created.status_code == 201
    assert created.json()["parent_code"] == "YY"
    tree = client.get(UNITS, headers=auth("operator"), params={"view": "tree"}).json()
    yy = next(u for u in tree if u["code"] == "YY")
    assert [c["code"] for c in yy["children"]] == ["YY-XR"]
    assert "YY-XR" not in [u["code"] for u in tree]


def test_given_unit_code_when_fetched_then_unit_or_404(client, auth):
    assert client.get(f"{UNITS}/WATER", headers=auth("operator")).json()["name"] == "自来水公司"
    assert client.get(f"{UNITS}/NOPE", headers=auth("operator")).status_code == 404


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"code": "WATER", "name": "x", "level": "city"}, 409, None),
        ({"code": "NEW", "name": "x", "level": "city", "parent_code": "NOPE"}, 422, None),
        ({"code": "NEW", "name": "x", "level": "galaxy"}, 422, "level"),
        ({"code": "NEW", "level": "city"}, 422, "name"),
    ],
)
def test_given_bad_unit_when_created_then_refused(client, auth, payload, status, field):
    response = client.post(UNITS, headers=auth("admin"), json=payload)
    assert response.status_code == status
    if field:
        assert field in [d["field"] for d in response.json()["error"]["details"]]


def test_given_unit_when_patched_then_changed_and_cycles_refused(client, auth):
    client.post(
        UNITS,
        headers=auth("admin"),
        json={"code": "YY-XR", "name": "新人街道", "level": "street", "parent_code": "YY"},
    )
    renamed = client.patch(
        f"{UNITS}/YY", headers=auth("admin"), json={"name": "榆阳区政府", "head_name": "区长"}
    )
    assert (renamed.json()["name"], renamed.json()["head_name"]) == ("榆阳区政府", "区长")
    cycle = client.patch(f"{UNITS}/YY", headers=auth("admin"), json={"parent_code": "YY-XR"})
    assert cycle.status_code == 422
    emptied = client.patch(f"{UNITS}/YY", headers=auth("admin"), json={"name": None})
    assert emptied.status_code == 422


def test_given_non_admin_when_changing_units_then_403(client, auth):
    assert (
        client.patch(f"{UNITS}/YY", headers=auth("supervisor"), json={"name": "x"}).status_code
        == 403
    )
