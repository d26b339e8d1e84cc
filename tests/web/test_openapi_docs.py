"""The OpenAPI document describes every operation: a summary of its own, a description that
ends with who may call it (and says what the route's role guard enforces), the error
responses it gives in the API's error shape with an example, and — for an operation that
takes a body — examples that the route's own validation accepts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter

from core.settings import Settings
from tests.factories import World
from web import api
from web.app import create_app
from web.deps import OPENAPI_MODELS
from web.errors import ErrorResponse, ValidationErrorResponse

METHODS = ("get", "post", "put", "patch", "delete")
ERRORS = ("400", "401", "403", "404", "409", "422")


@pytest.fixture(scope="module")
def built() -> tuple[FastAPI, dict[str, Any]]:
    app = create_app(settings=Settings(environment="test"))
    return app, app.openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def api_routes(app: FastAPI) -> dict[str, APIRoute]:
    """The schema's operations by label, as their routes (in the routers web.api lists)."""
    out: dict[str, APIRoute] = {}
    for router in api.DOCUMENTED:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                for method in route.methods or ():
                    out[f"{method} {api.PREFIX}{route.path_format}"] = route
    return out


def _default_summary(route: APIRoute) -> str:
    return route.name.replace("_", " ").title()


def test_given_the_document_then_it_holds_the_whole_api(built) -> None:
    _, document = built
    labels = [label for label, _ in operations(document)]
    assert len(labels) >= 69
    assert all(label.split(" ", 1)[1].startswith("/api/v1/") for label in labels)


def test_given_every_operation_then_it_has_its_own_summary_and_a_description(built) -> None:
    app, document = built
    routes = api_routes(app)
    missing = []
    for label, op in operations(document):
        route = routes[label]
        summary, description = op.get("summary", ""), op.get("description", "")
        if not summary or summary == _default_summary(route):
            missing.append(f"{label}: no summary of its own")
        # What it does, then who may call it: more than the roles line alone.
        if len(description.replace(api.WHO_MARK, "").split("\n\n")[0].strip()) < 20:
            missing.append(f"{label}: no description of what it does")
        if not description.rstrip().split("\n")[-1].startswith(api.WHO_MARK):
            missing.append(f"{label}: does not say who may call it")
    assert missing == []


def test_given_every_operation_then_the_roles_it_names_are_those_its_guard_lets_in(
    built,
) -> None:
    app, document = built
    routes = api_routes(app)
    for label, op in operations(document):
        roles = api.roles_of(routes[label])
        assert roles, f"{label} asks for no role"
        line = op["description"].rstrip().split("\n")[-1]
        named = set(line.removeprefix(api.WHO_MARK).strip(" .").split(", "))
        assert named == {r.value for r in roles}, label


def test_given_every_operation_then_it_documents_its_errors_in_the_error_shape(built) -> None:
    _, document = built
    for label, op in operations(document):
        responses = op["responses"]
        errors = [status for status in responses if status.startswith("4")]
        # Every operation wants a token and takes no NUL character in its path or query.
        assert {"401", "403", "404", "409", "422"} <= set(errors), label
        # Only reading a body fails with 400.
        assert ("400" in errors) == ("requestBody" in op), label
        for status in errors:
            assert status in ERRORS, f"{label} {status}"
            response = responses[status]
            content = response["content"]["application/json"]
            model = ValidationErrorResponse if status == "422" else ErrorResponse
            assert content["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}, label
            assert response["description"], f"{label} {status}"
            example = model.model_validate(content["example"])
            assert example.error.code and example.error.message, f"{label} {status}"


def test_given_an_operation_with_its_own_error_reasons_then_they_replace_the_general_ones(
    built,
) -> None:
    _, document = built
    op = document["paths"]["/api/v1/calendar/years/{year}/known"]["put"]
    assert op["responses"]["409"]["description"] == "the year is confirmed already"
    assert op["responses"]["403"]["description"] == "only administrators confirm"
    # Where an operation says nothing of its own, the general description stands.
    assert op["responses"]["401"]["description"] == "no bearer token, or not a valid one"


def _body_type(route: APIRoute) -> Any:
    if route.body_field is not None:
        return route.body_field.field_info.annotation
    assert route.openapi_extra is not None
    ref = route.openapi_extra["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    return next(m for m in OPENAPI_MODELS if m.__name__ == name)


def body_examples(built) -> Iterator[tuple[str, APIRoute, dict[str, Any]]]:
    app, document = built
    routes = api_routes(app)
    for label, op in operations(document):
        if "requestBody" in op:
            content = op["requestBody"]["content"]["application/json"]
            yield label, routes[label], content.get("examples", {})


def test_given_every_operation_with_a_body_then_it_has_examples_its_validation_accepts(
    built,
) -> None:
    checked = 0
    for label, route, examples in body_examples(built):
        assert examples, f"{label} has no example body"
        adapter: TypeAdapter[Any] = TypeAdapter(_body_type(route))
        for name, example in examples.items():
            assert example["summary"], f"{label} {name}"
            # As the route reads it: JSON text, validated by the route's own model.
            adapter.validate_json(json.dumps(example["value"], ensure_ascii=False))
            checked += 1
    assert checked >= 35


def test_given_a_body_the_model_refuses_then_the_example_check_would_fail(built) -> None:
    """The check above can fail: an example with a field the model does not take does."""
    label, route, examples = next(
        (lbl, r, e) for lbl, r, e in body_examples(built) if lbl == "POST /api/v1/units"
    )
    value = dict(next(iter(examples.values()))["value"], level="province")
    with pytest.raises(ValueError):
        TypeAdapter(_body_type(route)).validate_json(json.dumps(value))
    assert issubclass(_body_type(route), BaseModel), label


def test_given_an_example_answer_then_the_operation_s_response_model_accepts_it(built) -> None:
    """Examples as the document carries them (FastAPI leaves nulls out of it)."""
    app, document = built
    routes = api_routes(app)
    checked = 0
    for label, op in operations(document):
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/json", {})
            if status.startswith("2") and "example" in content:
                TypeAdapter(routes[label].response_model).validate_python(content["example"])
                checked += 1
    assert checked >= 1


@pytest.fixture
def served(app, client: TestClient) -> TestClient:
    return client


def _example(document: dict[str, Any], method: str, path: str, name: str) -> Any:
    op = document["paths"][path][method]
    return op["requestBody"]["content"]["application/json"]["examples"][name]["value"]


@pytest.mark.parametrize("name", ["phone", "anonymous"])
def test_given_the_intake_examples_when_an_operator_sends_them_then_tickets_are_taken(
    served: TestClient, world: World, auth: Callable[[str], dict[str, str]], name: str
) -> None:
    document = served.get("/openapi.json").json()
    body = _example(document, "post", "/api/v1/tickets", name)
    response = served.post("/api/v1/tickets", json=body, headers=auth("operator"))
    assert response.status_code == 201, response.text
    assert response.json()["ticket"]["description"] == body["description"]


def test_given_the_documented_401_when_no_token_is_sent_then_the_answer_matches_it(
    served: TestClient,
) -> None:
    document = served.get("/openapi.json").json()
    documented = document["paths"]["/api/v1/tickets"]["get"]["responses"]["401"]
    response = served.get("/api/v1/tickets")
    assert response.status_code == 401
    assert response.json() == documented["content"]["application/json"]["example"]


def test_given_the_documented_403_when_a_handler_creates_a_unit_then_the_answer_matches_it(
    served: TestClient, world: World, auth: Callable[[str], dict[str, str]]
) -> None:
    document = served.get("/openapi.json").json()
    body = _example(document, "post", "/api/v1/units", "street")
    response = served.post("/api/v1/units", json=body, headers=auth("water.handler"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    example = document["paths"]["/api/v1/units"]["post"]["responses"]["403"]["content"]
    assert set(response.json()["error"]) == set(example["application/json"]["example"]["error"])
