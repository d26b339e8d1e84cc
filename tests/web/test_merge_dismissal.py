"""A dispatcher says two merge candidates are not the same request, on both backends: the
pair leaves the merge-candidates queue and its count for good (and the operator's intake
suggestions), the decision is in the audit and in both tickets' histories, with the form
posted plainly (303) or by htmx (the candidates' part in place); a second dismissal of the
same pair, a ticket paired with itself and a post without its CSRF token change nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.errors import Conflict, InvalidInput
from hotline import duplicates
from tests.web.test_pages_queues import _audit, _ticket, _ticket_row, staff  # noqa: F401
from tests.web.test_pages_signin import _csrf, sign_in
from tickets.models import MergeDismissal, TicketEvent
from tickets.service import events_of
from web.pages import queues_data
from web.pages.queues_data import Queue, Sort

PHONE = "13900002222"


def _dismiss(client, ticket_id: int, **fields):
    """The dismiss form of the ticket's merge page, posted as a browser without JS does."""
    page = client.get(f"/queues/merge/{ticket_id}")
    assert page.status_code == 200, page.text
    return client.post(
        f"/queues/merge/{ticket_id}/dismiss",
        data={"csrf_token": _csrf(page.text), **fields},
        follow_redirects=False,
    )


def _count(client) -> int:
    """The merge tab's count as the page shows it."""
    page = client.get("/queues/merge").text
    match = re.search(r'href="/queues/merge"[^>]*>[^<]*<span class="q-count[^"]*">(\d+)<', page)
    assert match, "no merge count on the page"
    return int(match.group(1))


def _listed(client) -> str:
    """The merge queue's rows (after the tabs, whose counts also hold numbers)."""
    return client.get("/queues/merge").text.split('id="rows"')[1]


def _dismissals(session) -> list[MergeDismissal]:
    session.expire_all()
    return list(session.scalars(select(MergeDismissal).order_by(col(MergeDismissal.id))))


def _notes(session, ticket_id: int) -> list[TicketEvent]:
    session.expire_all()
    return [e for e in events_of(session, ticket_id) if e.data.get("kind") == "merge_dismissed"]


def test_given_two_tickets_from_one_phone_when_dismissed_then_gone_for_good_and_recorded(
    client, auth, staff, session, clock
):
    first = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    sign_in(client, "dispatcher")
    assert second["number"] in _listed(client)
    before = _count(client)

    done = _dismiss(
        client,
        second["id"],
        other_id=str(first["id"]),
        reason="  不同路段的两盏灯  ",
    )

    # no other candidate left for it: back to the queue, with the notice
    assert done.status_code == 303
    assert done.headers["location"].startswith("/queues/merge?done=dismissed")
    assert second["number"] in client.get(done.headers["location"]).text
    assert second["number"] not in _listed(client)
    assert _count(client) == before - 1
    [row] = _dismissals(session)
    assert (row.ticket_id, row.other_ticket_id) == (first["id"], second["id"])
    assert row.reason == "不同路段的两盏灯" and row.by_user_id is not None
    assert row.at == clock.now()
    [entry] = _audit(session, "ticket.merge_dismiss")
    assert entry.outcome == "ok" and entry.target == f"ticket:{second['id']}"
    assert entry.detail == {"other_id": first["id"]}
    for mine, other in ((first, second), (second, first)):
        [note] = _notes(session, mine["id"])
        assert note.reason == "不同路段的两盏灯" and note.actor == "dispatcher:dispatcher"
        assert note.data["other"] == other["number"] and note.data["other_id"] == other["id"]
    # the merge page and the operator's intake suggestions forget the pair too
    assert first["number"] not in client.get(f"/queues/merge/{second['id']}").text
    assert first["id"] not in {
        c.ticket.id
        for c in duplicates.candidates(
            session, ticket=_ticket_row(session, second["id"]), now=clock.now()
        )
    }
    # still not a candidate a day later (nothing time-bound about the decision)
    clock.advance(timedelta(days=1))
    assert queues_data.count(session, queue=Queue.merge, now=clock.now()) == before - 1


def test_given_three_from_one_phone_when_one_pair_dismissed_then_the_next_original_is_offered(
    client, auth, staff, session, clock
):
    a = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    b = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    c = _ticket(client, auth, "路灯又不亮了", caller_phone=PHONE)["ticket"]
    sign_in(client, "dispatcher")

    _dismiss(client, c["id"], other_id=str(a["id"]))

    now = clock.now()
    items = queues_data.items(session, queue=Queue.merge, sort=Sort.due, now=now)
    originals = {item.ticket.id: item.original.id for item in items if item.original}
    assert originals == {b["id"]: a["id"], c["id"]: b["id"]}
    # a page with other candidates left goes back to the ticket's own candidates
    done = _dismiss(client, b["id"], other_id=str(c["id"]))
    assert done.headers["location"].startswith(f"/queues/merge/{b['id']}?done=dismissed")
    items = queues_data.items(session, queue=Queue.merge, sort=Sort.newest, now=now)
    assert [item.ticket.id for item in items] == [b["id"]]
    assert queues_data.count(session, queue=Queue.merge, now=now) == 1
    assert [t.id for t in queues_data.merge_candidates(
        session, ticket=_ticket_row(session, c["id"]), now=now
    )] == []  # fmt: skip


def test_given_htmx_when_dismissed_then_the_candidates_part_comes_back_with_the_notice(
    client, auth, staff, session
):
    first = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    sign_in(client, "dispatcher")
    page = client.get(f"/queues/merge/{second['id']}")
    assert f'hx-post="/queues/merge/{second["id"]}/dismiss"' in page.text

    answer = client.post(
        f"/queues/merge/{second['id']}/dismiss",
        data={"other_id": str(first["id"]), "csrf_token": _csrf(page.text)},
        headers={"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)},
    )

    assert answer.status_code == 200
    assert answer.text.lstrip().startswith('<section class="card"')
    assert 'id="candidates"' in answer.text and "<html" not in answer.text
    assert second["number"] in answer.text  # the notice names the ticket
    assert f'href="/tickets/{first["id"]}"' not in answer.text
    assert len(_dismissals(session)) == 1


def test_given_a_dismissed_pair_when_dismissed_again_or_with_itself_then_refused_unchanged(
    client, auth, staff, session
):
    first = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    sign_in(client, "dispatcher")
    page = client.get(f"/queues/merge/{second['id']}").text
    assert _dismiss(client, second["id"], other_id=str(first["id"])).status_code == 303

    # the same form again, from the page opened before (the other side of the pair too)
    again = client.post(
        f"/queues/merge/{first['id']}/dismiss",
        data={"other_id": str(second["id"]), "csrf_token": _csrf(page)},
        follow_redirects=False,
    )
    itself = _dismiss(client, second["id"], other_id=str(second["id"]))
    missing = _dismiss(client, second["id"], other_id="999999")

    assert again.status_code == 409 and 'role="alert"' in again.text
    assert itself.status_code == 400
    assert missing.status_code == 409
    assert len(_dismissals(session)) == 1
    assert len(_notes(session, first["id"])) == 1 and len(_notes(session, second["id"])) == 1
    outcomes = sorted(e.outcome for e in _audit(session, "ticket.merge_dismiss"))
    assert outcomes == ["ok", "refused", "refused", "refused"]


def test_given_no_csrf_token_when_dismissing_then_refused_and_nothing_stored(
    client, auth, staff, session
):
    first = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    sign_in(client, "dispatcher")

    answer = client.post(
        f"/queues/merge/{second['id']}/dismiss",
        data={"other_id": str(first["id"])},
        follow_redirects=False,
    )

    assert answer.status_code == 403
    assert _dismissals(session) == []


def test_dismiss_service_refuses_a_pair_twice_and_a_ticket_with_itself(
    client, auth, staff, session, clock
):
    first = _ticket(client, auth, caller_phone=PHONE)["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone=PHONE)["ticket"]
    duplicates.dismiss(
        session, ticket_id=second["id"], other_id=first["id"], actor=None, now=clock.now()
    )
    session.commit()

    with pytest.raises(Conflict):
        duplicates.dismiss(
            session, ticket_id=first["id"], other_id=second["id"], actor=None, now=clock.now()
        )
    session.rollback()
    with pytest.raises(InvalidInput):
        duplicates.dismiss(
            session, ticket_id=first["id"], other_id=first["id"], actor=None, now=clock.now()
        )
    assert duplicates.dismissed_with(session, first["id"]) == {second["id"]}
    assert duplicates.dismissed_with(session, second["id"]) == {first["id"]}
