from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import col

from core.db import make_engine
from core.errors import Conflict
from core.settings import Settings
from dispatch.models import Unit, UnitLevel
from hotline.tables import metadata
from web.app import create_app
from web.deps import SessionDep


@pytest.fixture
def probe(app, client):
    """Two extra routes that write a unit, one of them failing afterwards."""

    @app.post("/probe/{code}")
    def write(code: str, session: SessionDep, fail: bool = False) -> dict:
        session.add(Unit(code=code, name=code, level=UnitLevel.city))
        session.flush()
        if fail:
            raise Conflict("changed my mind", code=code)
        return {"code": code}

    return client


def _unit_codes(session) -> set[str]:
    return set(session.scalars(select(col(Unit.code))))


def test_given_route_that_returns_when_request_ends_then_its_writes_are_committed(probe, session):
    assert probe.post("/probe/KEPT").status_code == 200
    assert "KEPT" in _unit_codes(session)


def test_given_route_that_raises_after_writing_when_request_ends_then_nothing_is_kept(
    probe, session
):
    response = probe.post("/probe/GONE", params={"fail": True})
    assert response.status_code == 409
    assert response.json() == {
        "error": {"code": "conflict", "message": "changed my mind", "details": {"code": "GONE"}}
    }
    assert "GONE" not in _unit_codes(session)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/api/v1/nowhere", 404, "not_found"),
        ("delete", "/api/v1/tickets", 405, "method_not_allowed"),
    ],
)
def test_given_unknown_route_or_method_then_the_same_error_envelope(
    client, method, path, status, code
):
    response = client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_given_no_session_factory_when_app_created_then_no_database_until_first_request(tmp_path):
    url = f"sqlite:///{tmp_path / 'lazy' / 'core.db'}"
    app = create_app(settings=Settings(environment="test", database_url=url))
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 200
    assert not (tmp_path / "lazy").exists()
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    response = client.get("/api/v1/users/me", headers={"Authorization": "Bearer unknown"})
    assert response.status_code == 401


def test_given_the_app_when_openapi_requested_then_bearer_auth_is_declared(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "/api/v1/tickets/{ticket_id}/dispatch" in spec["paths"]


def test_given_a_browser_at_the_root_then_it_is_asked_to_sign_in(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    page = client.get("/")
    assert 'name="password"' in page.text and "登录" in page.text


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_given_the_spec_then_every_reference_resolves_and_intake_documents_its_body(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    create = spec["paths"]["/api/v1/tickets"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TicketCreate"}
    assert "description" in schemas["TicketCreate"]["required"]
    assert create["security"] == [{"HTTPBearer": []}]


def test_given_no_token_and_a_bad_body_when_creating_then_401_before_validation(client):
    assert client.post("/api/v1/tickets", json={}).status_code == 401
