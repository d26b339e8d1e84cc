"""Nothing about a confidential caller leaks through the free text, and a parent closed at
intake takes its merged tickets with it — through the API."""

from __future__ import annotations

import pytest

from tests.web.test_tickets import TICKETS, WATER_CUT, post

SPOKEN = "我叫张三，电话13812345678，身份证11010119900307123X，座机0912-3456789。"


@pytest.fixture
def confidential(client, auth):
    return post(
        client,
        auth("operator"),
        description=WATER_CUT + SPOKEN,
        request="请张三的邻居也通知到，回电13812345678",
        caller_name="张三",
        caller_phone="13812345678",
        confidential=True,
    ).json()["ticket"]


def test_given_confidential_transcript_when_handler_reads_then_numbers_ids_and_name_masked(
    client, auth, confidential
):
    ticket = client.get(f"{TICKETS}/{confidential['id']}", headers=auth("water.handler")).json()
    assert ticket["description"] == (
        WATER_CUT + "我叫张*，电话138****5678，身份证110***********123X，座机091****6789。"
    )
    assert ticket["request"] == "请张*的邻居也通知到，回电138****5678"
    listed = client.get(TICKETS, headers=auth("water.handler")).json()["items"]
    events = client.get(
        f"{TICKETS}/{confidential['id']}/events", headers=auth("water.handler")
    ).json()
    for seen in (ticket, listed, events):
        text = str(seen)
        assert "13812345678" not in text and "张三" not in text
        assert "11010119900307123X" not in text and "3456789" not in text


def test_given_confidential_transcript_when_centre_staff_reads_then_in_clear(
    client, auth, confidential
):
    ticket = client.get(f"{TICKETS}/{confidential['id']}", headers=auth("dispatcher")).json()
    assert ticket["description"] == WATER_CUT + SPOKEN


def test_given_a_merged_duplicate_when_its_parent_is_closed_at_intake_then_both_close(client, auth):
    parent = post(client, auth("operator"), description="公积金怎么提取").json()["ticket"]
    child = post(client, auth("operator"), description="公积金提取要带什么").json()["ticket"]
    merged = client.post(
        f"{TICKETS}/{child['id']}/merge",
        headers=auth("operator"),
        json={"parent_id": parent["id"]},
    )
    assert merged.status_code == 200, merged.text
    closed = client.post(
        f"{TICKETS}/{parent['id']}/close-at-intake",
        headers=auth("operator"),
        json={"answer": "携带身份证到公积金中心办理"},
    )
    assert closed.status_code == 200, closed.text
    after = client.get(f"{TICKETS}/{child['id']}", headers=auth("operator")).json()
    assert (after["status"], after["answer"]) == ("closed", "携带身份证到公积金中心办理")


def test_given_confidential_ticket_when_a_handler_searches_its_hidden_text_then_it_is_not_found(
    client, auth, confidential
):
    def found(who: str, q: str) -> list[int]:
        page = client.get(TICKETS, headers=auth(who), params={"q": q})
        assert page.status_code == 200, page.text
        return [t["id"] for t in page.json()["items"]]

    # A search that matched only what the handler is shown masked would confirm a guess.
    for guess in ("13812345678", "张三", "11010119900307123X"):
        assert confidential["id"] not in found("water.handler", guess)
        assert confidential["id"] in found("dispatcher", guess)
    assert confidential["id"] in found("water.handler", confidential["number"])


def test_given_the_web_process_when_a_request_with_a_phone_is_logged_then_it_is_masked(caplog):
    import logging

    from web.app import create_app

    access = logging.getLogger("uvicorn.access")
    handler = logging.StreamHandler()
    access.addHandler(handler)
    try:
        create_app()
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/1.1" %d',
            ("127.0.0.1", "GET", "/api/v1/tickets?caller_phone=13812345678", 200),
            None,
        )
        assert all(f.filter(record) for f in handler.filters)
        assert "13812345678" not in record.getMessage()
        assert "138****5678" in record.getMessage()
    finally:
        access.removeHandler(handler)
