"""The calls behind a call figure (web/pages/figures_calls.py, hotline.figures.call_drill):
the dashboard's call numbers link to lists that hold exactly the calls each number counts,
the caller masked, the ticket linked; the list exports as CSV with the same rows; only the
centre may look (calls belong to no unit); bad parameters are 422 naming the field."""

from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select
from sqlmodel import col

from accounts.models import User
from telephony.models import CallRecord, QueueOutcome
from tests.hotline.test_figures_calls import L, _call
from tests.web.test_figures_pages import city  # noqa: F401  (the fixture)
from tests.web.test_pages_signin import sign_in
from tickets.models import Channel, Ticket

Q = QueueOutcome
DAY = "from=2026-12-03&to=2026-12-03"


def _calls(session) -> dict[str, int]:
    made = {
        "c1": _call(session, L(9, 0), wait=15, outcome=Q.agent),
        "c2": _call(session, L(9, 5), wait=20, outcome=Q.agent),
        "short": _call(session, L(9, 10), wait=3, outcome=Q.abandoned),
        "c5": _call(session, L(9, 12), wait=40, outcome=Q.abandoned),
        "c6": _call(session, L(9, 20), wait=60, outcome=Q.overflowed),
    }
    first = session.get(CallRecord, made["c1"])
    first.caller_number = "13812345678"
    ticket = Ticket(
        number="T20261203001", description="路灯不亮", channel=Channel.phone,
        created_at=L(9, 1), updated_at=L(9, 1),
    )  # fmt: skip
    session.add(ticket)
    session.flush()
    first.ticket_id = ticket.id
    first.agent_extension = "8001"
    operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
    first.agent_user_id = operator.id
    session.commit()
    return made


def _listed(page: str) -> set[int]:
    return {int(n) for n in re.findall(r'<tr data-call="(\d+)"', page)}


def test_the_dashboards_call_numbers_list_exactly_the_calls_they_count(
    client, city, session
) -> None:
    made = _calls(session)
    sign_in(client, "supervisor")
    board = client.get(f"/figures?{DAY}").text
    assert 'data-calls="answered"' in board and "figure=within_15s&amp;part=numerator" in board

    def listed(figure: str, part: str = "numerator") -> set[int]:
        page = client.get(f"/figures/calls?{DAY}&figure={figure}&part={part}")
        assert page.status_code == 200, page.text[:300]
        return _listed(page.text)

    assert listed("answer_rate") == {made["c1"], made["c2"]}
    assert listed("within_15s") == {made["c1"]}  # exactly 15 s counts
    assert listed("within_30s") == {made["c1"], made["c2"]}
    assert listed("abandon_rate") == {made["c5"]}  # the 3-second hang-up is a short abandon
    assert listed("answer_rate", "denominator") == {
        made["c1"], made["c2"], made["c5"], made["c6"]
    }  # fmt: skip
    page = client.get(f"/figures/calls?{DAY}&figure=within_15s").text
    assert "138****5678" in page and "13812345678" not in page
    assert 'href="/tickets/' in page and "T20261203001" in page
    operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
    assert f"{operator.display_name} (8001)" in page


def test_the_call_list_exports_with_the_same_rows(client, city, session) -> None:
    _calls(session)
    sign_in(client, "supervisor")
    answer = client.get(f"/figures/export/call_list.csv?{DAY}&figure=answer_rate&part=denominator")
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.text.lstrip("\ufeff"))))
    header = rows[0]
    assert header[:2] == ["到达时间", "来电人"]
    assert len(rows) == 1 + 4
    assert any("138****5678" in r for r in rows) and "13812345678" not in answer.text
    xlsx = client.get(f"/figures/export/call_list.xlsx?{DAY}&figure=abandon_rate")
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"


def test_only_the_centre_sees_calls_and_bad_parameters_are_named(client, city, session) -> None:
    _calls(session)
    sign_in(client, "street.handler")
    assert client.get(f"/figures/calls?{DAY}&figure=answer_rate").status_code == 403
    assert client.get(f"/figures/export/call_list.csv?{DAY}&figure=answer_rate").status_code == 404
    sign_in(client, "supervisor")
    assert client.get(f"/figures/calls?{DAY}&figure=nonsense").status_code == 422
    assert client.get(f"/figures/calls?{DAY}&figure=answer_rate&part=half").status_code == 422
    backwards = "from=2026-12-09&to=2026-12-01"
    assert client.get(f"/figures/calls?{backwards}&figure=answer_rate").status_code == 422
    export = client.get(f"/figures/export/call_list.csv?{DAY}&figure=nonsense")
    assert export.status_code == 422 and export.text.startswith("figure:")
