"""The queues' reads that bench/pages.py times at 1,000,000 tickets, kept fast by their shape
and checked for exactness here, on both backends: the manual queue's pages (one index range
per urgency, the page offsets crossing from one urgency to the next) in the same order as a
full sort; its per-urgency read planned on the index with no sort step; and the one-pass
merge-candidate scan agreeing with the definition (an older open ticket of the window from
the same phone or address, the pair not dismissed) on random tickets and dismissals."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text
from sqlmodel import col

from tickets.models import Channel, MergeDismissal, Status, Ticket, Urgency
from web.pages import queues_data
from web.pages.queues_data import MERGE_PARENTS, MERGE_WINDOW, MERGEABLE, Queue, Sort


def _add(session, rows: list[dict]) -> None:
    session.execute(insert(Ticket.__table__), rows)  # type: ignore[attr-defined]
    session.flush()


def _row(ticket_id: int, created, **fields) -> dict:
    return {
        "id": ticket_id,
        "number": f"T{ticket_id:08d}",
        "channel": Channel.phone,
        "status": Status.pending_dispatch,
        "urgency": Urgency.normal,
        "confidential": False,
        "description": "路灯不亮",
        "created_at": created,
        "updated_at": created,
        "return_count": 0,
        "reopen_count": 0,
        "event_seq": 0,
        **fields,
    }


RANK = {Urgency.very_urgent: 0, Urgency.urgent: 1, Urgency.normal: 2}


def test_manual_queue_pages_cross_urgencies_in_the_order_of_a_full_sort(session, clock):
    rng = random.Random(16)
    now = clock.now()
    rows = [
        _row(
            1000 + i,
            now - timedelta(minutes=rng.randrange(10_000)),
            urgency=rng.choice([Urgency.very_urgent, Urgency.urgent, *[Urgency.normal] * 4]),
            status=rng.choice([Status.pending_dispatch] * 3 + [Status.dispatched]),
        )
        for i in range(70)
    ]
    _add(session, rows)
    expected = [
        r["id"]
        for r in sorted(
            (r for r in rows if r["status"] == Status.pending_dispatch),
            key=lambda r: (RANK[r["urgency"]], r["created_at"], r["id"]),
        )
    ]

    pages = [
        [
            item.ticket.id
            for item in queues_data.items(
                session, queue=Queue.manual, sort=Sort.due, now=now, offset=offset, limit=7
            )
        ]
        for offset in range(0, len(expected) + 7, 7)
    ]

    assert [ticket_id for page in pages for ticket_id in page] == expected
    assert all(len(page) == 7 for page in pages[:-2])
    assert queues_data.count(session, queue=Queue.manual, now=now) == len(expected)


def test_the_manual_queue_reads_its_index_without_sorting(session, clock):
    # enough rows, most of them closed, for the planner to prefer the index it is given
    rng = random.Random(7)
    _add(
        session,
        [
            _row(
                i,
                clock.now() - timedelta(minutes=i),
                status=Status.closed if rng.random() < 0.9 else Status.pending_dispatch,
                urgency=rng.choice([*Urgency]),
            )
            for i in range(1, 3001)
        ],
    )
    session.execute(text("ANALYZE ticket"))
    stmt = (
        select(col(Ticket.id))
        .where(
            col(Ticket.status) == Status.pending_dispatch,
            col(Ticket.urgency) == Urgency.urgent,
        )
        .order_by(col(Ticket.created_at), col(Ticket.id))
        .limit(26)
    )
    compiled = stmt.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    if session.get_bind().dialect.name == "sqlite":
        plan = " ".join(
            str(row[-1]) for row in session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        )
        assert "ix_ticket_status_urgency_created" in plan and "TEMP B-TREE" not in plan, plan
    else:
        plan = " ".join(row[0] for row in session.execute(text(f"EXPLAIN {compiled}")))
        assert "ix_ticket_status_urgency_created" in plan and "Sort" not in plan, plan


def _reference(rows: list[dict], dismissed: set[tuple[int, int]], now) -> dict[int, int]:
    """The merge candidates by their definition, each against every older ticket."""
    window = [
        r for r in rows if r["status"] in MERGE_PARENTS and r["created_at"] >= now - MERGE_WINDOW
    ]
    found = {}
    for r in window:
        if r["status"] not in MERGEABLE:
            continue
        older = [
            o["id"]
            for o in window
            if o["id"] < r["id"]
            and (o["id"], r["id"]) not in dismissed
            and (
                (r["caller_phone"] and o["caller_phone"] == r["caller_phone"])
                or (r["address"] and o["address"] == r["address"])
            )
        ]
        if older:
            found[r["id"]] = min(older)
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_merge_scan_agrees_with_the_definition(session, clock, seed):
    rng = random.Random(seed)
    now = clock.now()
    statuses = [*Status]
    rows = [
        _row(
            i,
            now - timedelta(days=rng.uniform(0, 20)),
            status=rng.choice(statuses),
            caller_phone=rng.choice([None, "", *[f"1390000{n:04d}" for n in range(8)]]),
            address=rng.choice([None, "", *[f"人民路{n}号" for n in range(8)]]),
        )
        for i in range(1, 161)
    ]
    _add(session, rows)
    pairs = {tuple(sorted(rng.sample(range(1, 161), 2))) for _ in range(60)}
    for low, high in pairs:
        session.add(MergeDismissal(ticket_id=low, other_ticket_id=high, at=now))
    session.flush()

    found, _ = queues_data._merge_pairs(session, now)

    expected = _reference(rows, pairs, now)
    assert expected  # the data has candidates, and dismissed pairs among them
    assert found == expected
    assert queues_data.count(session, queue=Queue.merge, now=now) == len(expected)
    listed = queues_data.items(session, queue=Queue.merge, sort=Sort.newest, now=now, limit=500)
    assert {item.ticket.id: item.original.id for item in listed} == expected
