"""What the API answers to input a fuzzer sends (tests/web/test_fuzz.py): never a server
error, always the documented error shape."""

from __future__ import annotations

import pytest

API = "/api/v1"
BEYOND_32_BITS = 2**31
BEYOND_64_BITS = 2**63


def assert_validation_error(response, where: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert where in {p["in"] for p in body["error"]["details"]}


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("ident", [BEYOND_32_BITS, BEYOND_64_BITS, 0])
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/tickets/{id}"),
        ("GET", "/tickets/{id}/events"),
        ("GET", "/tickets/{id}/escalations"),
        ("POST", "/assignments/{id}/sign"),
        ("GET", "/users/{id}"),
        ("GET", "/sla-policies/{id}"),
        ("DELETE", "/rules/{id}"),
        ("POST", "/escalations/{id}/ack"),
    ],
)
def test_given_an_id_out_of_range_in_the_path_when_requested_then_422_not_a_server_error(
    client, auth, method, path, ident
):
    response = client.request(method, API + path.format(id=ident), headers=auth("admin"))
    assert_validation_error(response, "path")


def test_given_an_id_out_of_range_in_query_or_body_when_requested_then_422(client, auth):
    listed = client.get(f"{API}/calls", params={"ticket_id": BEYOND_64_BITS}, headers=auth("admin"))
    assert_validation_error(listed, "query")
    merged = client.post(
        f"{API}/tickets/1/merge", json={"parent_id": BEYOND_32_BITS}, headers=auth("admin")
    )
    assert_validation_error(merged, "body")


# ---------------------------------------------------------------- NUL


def test_given_a_nul_character_in_a_body_string_when_posted_then_422_and_nothing_is_written(
    client, auth
):
    response = client.post(
        f"{API}/units",
        json={"code": "NUL", "name": "a\u0000b", "level": "city"},
        headers=auth("admin"),
    )
    assert_validation_error(response, "body")
    assert client.get(f"{API}/units/NUL", headers=auth("admin")).status_code == 404


def test_given_a_nul_character_in_query_or_path_when_requested_then_422(client, auth):
    assert_validation_error(
        client.get(f"{API}/tickets", params={"q": "a\x00"}, headers=auth("admin")), "query"
    )
    assert_validation_error(client.get(f"{API}/units/A%00B", headers=auth("admin")), "path")


def test_given_an_escaped_backslash_before_u0000_when_posted_then_it_is_plain_text(client, auth):
    # JSON "a\\u0000" is the six characters `a\u0000`, not a NUL.
    response = client.post(
        f"{API}/rules/dry-run",
        content=b'{"text": "a\\\\u0000"}',
        headers={**auth("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the 422 handler


def test_given_a_body_that_is_not_utf8_when_posted_then_422_not_a_server_error(client, auth):
    response = client.post(
        f"{API}/tickets",
        content=b'{"description": "\xff\xfe"}',
        headers={**auth("operator"), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("bad_request", "validation_error")


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_given_nan_or_infinity_in_a_body_when_posted_then_422_naming_the_field(
    client, auth, number
):
    response = client.post(
        f"{API}/assignments/1/extensions",
        content=b'{"extend_by": %s, "extend_unit": "workdays", "reason": "x"}' % number,
        headers={**auth("water.handler"), "Content-Type": "application/json"},
    )
    assert_validation_error(response, "body")
    assert "extend_by" in {p["field"] for p in response.json()["error"]["details"]}


# ---------------------------------------------------------------- dates


def test_given_a_year_out_of_range_when_listing_calendar_days_then_422(client, auth):
    for year in (0, 10_000):
        response = client.get(f"{API}/calendar/days", params={"year": year}, headers=auth("admin"))
        assert_validation_error(response, "query")


# ---------------------------------------------------------------- search


def test_given_like_wildcards_in_q_when_searching_then_they_match_only_themselves(client, auth):
    for description in ("水费多收了100%", "路灯不亮", "under_score 的问题", "back\\slash 问题"):
        client.post(f"{API}/tickets", json={"description": description}, headers=auth("operator"))

    def found(q: str) -> set[str]:
        page = client.get(f"{API}/tickets", params={"q": q}, headers=auth("admin")).json()
        return {t["description"] for t in page["items"]}

    assert found("%") == {"水费多收了100%"}
    assert found("_") == {"under_score 的问题"}
    assert found("\\") == {"back\\slash 问题"}
    assert found("路灯") == {"路灯不亮"}


# ---------------------------------------------------------------- documentation


def test_given_the_openapi_document_then_every_operation_documents_the_error_responses(client):
    schema = client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in ("401", "403", "404", "409", "422"):
                assert status in responses, f"{method.upper()} {path} lacks {status}"
                content = responses[status]["content"]["application/json"]["schema"]
                assert content["$ref"].rsplit("/", 1)[-1] in (
                    "ErrorResponse",
                    "ValidationErrorResponse",
                )


# ---------------------------------------------------------------- PATCH


@pytest.fixture
def ticket(client, auth):
    response = client.post(
        f"{API}/tickets", json={"description": "路灯不亮"}, headers=auth("operator")
    )
    return response.json()["ticket"]


@pytest.mark.parametrize("field", ["description", "confidential", "urgency", "request_type"])
def test_given_explicit_null_for_a_field_that_cannot_be_empty_when_patching_then_422(
    client, auth, ticket, field
):
    response = client.patch(
        f"{API}/tickets/{ticket['id']}", json={field: None}, headers=auth("operator")
    )
    assert_validation_error(response, "body")
    assert response.json()["error"]["details"][0]["field"] == field


def test_given_explicit_null_for_a_field_that_may_be_empty_when_patching_then_it_is_cleared(
    client, auth, ticket
):
    client.patch(f"{API}/tickets/{ticket['id']}", json={"title": "路灯"}, headers=auth("operator"))
    response = client.patch(
        f"{API}/tickets/{ticket['id']}", json={"title": None}, headers=auth("operator")
    )
    assert response.status_code == 200, response.text
    assert response.json()["title"] is None


def test_given_a_naive_datetime_when_patching_then_422(client, auth, ticket):
    response = client.patch(
        f"{API}/tickets/{ticket['id']}",
        json={"occurred_at": "2026-11-27T08:00:00"},
        headers=auth("operator"),
    )
    assert_validation_error(response, "body")


@pytest.mark.parametrize(
    "path,body",
    [
        ("/units/WATER", {"name": None}),
        ("/sla-policies/1", {"sign_unit": None}),
        ("/rules/1", {"enabled": None}),
        ("/rules/1", {"priority": BEYOND_32_BITS}),
    ],
)
def test_given_explicit_null_or_out_of_range_when_patching_reference_data_then_422(
    client, auth, path, body
):
    assert_validation_error(client.patch(API + path, json=body, headers=auth("admin")), "body")


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize("value", [1, 0, "yes"])
def test_given_a_non_boolean_for_a_boolean_when_posted_then_422(client, auth, value):
    response = client.put(
        f"{API}/calendar/days/2027-01-01", json={"is_workday": value}, headers=auth("admin")
    )
    assert_validation_error(response, "body")


@pytest.mark.parametrize("value", ["1700000000", "0"])
def test_given_a_number_for_a_date_in_the_query_when_listing_then_422(client, auth, value):
    for path, name in (("/tickets", "created_from"), ("/calls", "arrived_from")):
        response = client.get(API + path, params={name: value}, headers=auth("admin"))
        assert_validation_error(response, "query")


def test_given_a_number_for_a_time_when_dry_running_then_422(client, auth):
    response = client.post(
        f"{API}/rules/dry-run", json={"text": "停水", "local_time": 3600}, headers=auth("admin")
    )
    assert_validation_error(response, "body")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_given_a_datetime_beyond_the_storable_range_when_listing_then_422(client, auth, value):
    response = client.get(API + "/tickets", params={"created_to": value}, headers=auth("admin"))
    assert_validation_error(response, "query")


def test_given_a_binary_body_with_nul_bytes_when_posted_then_the_guard_lets_it_through():
    import asyncio

    from web.guards import RejectNul

    seen: list[bytes] = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict] = []

    async def run(content_type: bytes, body: bytes) -> int:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "path": "/upload",
            "query_string": b"",
            "headers": [(b"content-type", content_type)],
        }
        await RejectNul(app)(scope, receive, send)
        return sent[-2]["status"]

    wav = b"RIFF\x00\x00\x00\x00WAVEfmt "
    assert asyncio.run(run(b"audio/wav", wav)) == 200 and seen == [wav]
    assert asyncio.run(run(b"application/json", b'{"a": "\\u0000"}')) == 422
