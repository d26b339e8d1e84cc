from __future__ import annotations

import pytest

from accounts import service as accounts

ME = "/api/v1/users/me"


def test_given_no_token_when_calling_the_api_then_401_with_bearer_challenge(client, world):
    response = client.get(ME)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic dXNlcjpwYXNz", "token"])
def test_given_bad_credentials_when_calling_the_api_then_401(client, world, header):
    response = client.get(ME, headers={"Authorization": header})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_given_deactivated_account_when_calling_the_api_then_401(client, world, session, auth):
    accounts.deactivate_user(session, user_id=world.staff["operator"].id)
    session.commit()
    assert client.get(ME, headers=auth("operator")).status_code == 401


def test_given_valid_token_when_asking_who_am_i_then_own_account_without_secrets(
    client, world, auth
):
    body = client.get(ME, headers=auth("water.handler")).json()
    assert body["username"] == "water.handler"
    assert body["role"] == "handler"
    assert body["unit_code"] == "WATER"
    assert "token" not in body and "token_hash" not in body


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [
        ("water.handler", "post", "/api/v1/tickets"),
        ("operator", "get", "/api/v1/users"),
        ("dispatcher", "post", "/api/v1/units"),
        ("supervisor", "post", "/api/v1/sla-policies"),
        ("operator", "post", "/api/v1/tickets/1/review-return"),
        ("dispatcher", "post", "/api/v1/tickets/1/archive"),
        ("operator", "post", "/api/v1/assignments/1/sign"),
        ("water.handler", "post", "/api/v1/tickets/1/review-reply"),
        ("water.handler", "patch", "/api/v1/tickets/1"),
    ],
)
def test_given_role_without_the_right_when_calling_then_403(client, auth, who, method, path):
    response = client.request(method, path, headers=auth(who), json={})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert error["details"]["role"] == ("handler" if "." in who else who)


def test_given_admin_when_creating_a_user_then_token_shown_once_and_it_works(client, auth):
    created = client.post(
        "/api/v1/users",
        headers=auth("admin"),
        json={"username": "zhang", "display_name": "张伟", "role": "handler", "unit_code": "YY"},
    )
    assert created.status_code == 201
    token = created.json()["token"]
    me = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "zhang"
    listed = client.get("/api/v1/users", headers=auth("admin"), params={"unit_code": "YY"})
    assert "zhang" in [u["username"] for u in listed.json()]
    assert all("token" not in u for u in listed.json())


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"username": "h", "display_name": "H", "role": "handler"}, 422),
        ({"username": "h", "display_name": "H", "role": "handler", "unit_code": "NOPE"}, 422),
        ({"username": "operator", "display_name": "again", "role": "operator"}, 409),
        ({"username": "h", "display_name": "H", "role": "boss"}, 422),
    ],
)
def test_given_bad_user_when_admin_creates_it_then_refused(client, auth, payload, status):
    response = client.post("/api/v1/users", headers=auth("admin"), json=payload)
    assert response.status_code == status, response.json()


def test_given_rotated_token_when_old_one_used_then_401(client, auth, world):
    old = auth("dispatcher")
    rotated = client.post("/api/v1/users/me/token", headers=old)
    assert rotated.status_code == 200
    assert client.get(ME, headers=old).status_code == 401
    new = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert client.get(ME, headers=new).json()["username"] == "dispatcher"


def test_given_admin_when_deactivating_a_user_then_their_token_stops_working(client, auth, world):
    user_id = world.handlers["YY"].id
    response = client.post(f"/api/v1/users/{user_id}/deactivate", headers=auth("admin"))
    assert response.json()["active"] is False
    assert client.get(ME, headers=auth("yy.handler")).status_code == 401
