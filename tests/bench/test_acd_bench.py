"""bench/acd.py's own analysis, on a tiny load through the real `hotline sip`: the figures'
keys are there, and ``lost_calls`` is counted from how every placed call really ended (sipp's
own count of ends and the call records), not assumed. No timing is asserted: the machine is
shared."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from accounts import agents
from accounts.models import AgentState
from core.db import session_scope
from telephony.endpoint import CallDirection
from telephony.models import CallRecord

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench import _common as common  # noqa: E402
from bench._acd_load import Load, steady_load  # noqa: E402
from bench._acd_platform import (  # noqa: E402
    Record,
    call_ends,
    make_operators,
    order_ready,
    ring_delays_ms,
    sign_in_all,
    sipp_end,
    stand_down,
)
from bench.acd import TARGETS, figures, ladder_run, open_rig  # noqa: E402


def _record(call_id: str, outcome: str | None) -> Record:
    now = datetime.now(UTC)
    return Record(call_id, now, now, now, outcome, None, None, now)


def test_given_calls_without_a_record_or_an_outcome_then_they_are_lost():
    seen = [
        _record("1-9@h", "agent"),
        _record("2-9@h", "abandoned"),
        _record("3-9@h", "overflowed"),
        _record("4-9@h", None),  # the queue never said how it left
    ]
    ends = call_ends(6, seen)  # two placed calls left no record at all
    assert (ends["answered"], ends["abandoned"], ends["overflowed"]) == (1, 1, 1)
    assert ends["no_outcome"] == 1 and ends["records"] == 4
    assert ends["lost_calls"] == 3


def _on_call(url: str, user_id: int, call_id: str, *, ended: bool) -> None:
    """The operator rung and answered for ``call_id``, whose record is still up or ended."""
    now = datetime.now(UTC)
    _, factory = common.session_factory(url)
    with session_scope(factory) as session:
        session.add(
            CallRecord.model_validate(
                {
                    "call_id": call_id,
                    "direction": CallDirection.INBOUND,
                    "arrived_at": now,
                    "ended_at": now if ended else None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        )
        rung = agents.reserve(session, [], call_id, now)  # the longest idle: ``user_id``
        assert rung is not None and rung.user_id == user_id
        assert agents.answered(session, user_id, call_id, now) is not None


def test_given_operators_still_on_calls_at_the_end_then_stand_down_reports_them_not_raises():
    with common.sqlite_database() as url:
        ops = make_operators(url, ["8000", "8001", "8002"])
        sign_in_all(url, None, ops)
        order_ready(url, None, [o.user_id for o in ops])
        _on_call(url, ops[0].user_id, "live-1@h", ended=False)  # its caller never hung up
        _on_call(url, ops[1].user_id, "gone-1@h", ended=True)  # ended, operator not released

        out = stand_down(url, None, [o.user_id for o in ops], wait_s=0.5)

        assert out["operators_held_by_a_call"] == 2
        assert out["on_live_calls"] == 1
        assert out["stuck"] == [{"user_id": ops[1].user_id, "state": "on_call", "call": "gone-1@h"}]
        _, factory = common.session_factory(url)
        with factory() as session:
            states = [agents.status(session, o.user_id, datetime.now(UTC)).state for o in ops]
        assert states == [AgentState.on_call, AgentState.on_call, AgentState.not_ready]


def test_given_sipps_last_screen_then_its_ends_are_the_cumulative_column():
    screen = (
        "  Total Calls created    |                           |       10                 \n"
        "  Successful call        |        3                  |        7                 \n"
        "  Failed call            |        1                  |        2                 \n"
    )
    end = sipp_end(1, screen)  # one call had not ended when sipp stopped
    assert (end.successful, end.failed, end.placed) == (7, 2, 10)


def test_given_a_pick_and_the_seats_invite_then_the_ring_delay_is_their_distance():
    # the edge's log line (its time with the offset) and sipp's trace (local time, naive)
    at = datetime(2026, 12, 4, 22, 54, 5, 481000).astimezone().isoformat(timespec="milliseconds")
    log = f"{at} INFO    sip telephony.acd [call=1-7@h]: call 1-7@h rings agent 1 (8000)\n"
    trace = (
        "----------------------------------------------- 2026-12-04 22:54:05.493500\n"
        "UDP message received [700] bytes :\n\nINVITE sip:8000@127.0.0.1:5 SIP/2.0\n\n"
        "----------------------------------------------- 2026-12-04 22:54:05.993500\n"
        "UDP message received [700] bytes :\n\nINVITE sip:8000@127.0.0.1:5 SIP/2.0\n"
    )
    (delay,) = ring_delays_ms(log, [trace])  # the retransmission is not a ring
    assert abs(delay - 12.5) < 0.01


def test_given_a_tiny_load_through_hotline_sip_then_every_placed_call_is_accounted_for():
    load = Load(agents=2, calls=6, talk_s=2.0, wrap_up_s=1.0, occupancy=0.5)
    with open_rig(
        db="sqlite", sampled=1, operators=2, wrap_up_s=load.wrap_up_s, max_queue=8, warmed=False
    ) as (rig, info):
        assert info["registered"] == {"ok": 3, "failed": 0}
        sign_in_all(rig.url, rig.bell, rig.sampled + rig.load)
        # Two calls are bridged within seconds even on a loaded machine: less room than the
        # bench's 30 s (which is for hundreds of calls at once).
        ladder = ladder_run(rig, (1,), rate=5, room_s=12.0)
        result = {"ladder": ladder, "steady": steady_load(rig, load)}
    steady = result["steady"]
    # sipp made every call and saw each of them end; the records say how each one ended
    assert steady["placed"] == load.calls
    assert (
        steady["sipp_successful"] + steady["sipp_failed"] + steady["sipp_not_ended"] == load.calls
    )
    assert steady["records"] == load.calls
    accounted = sum(
        steady[k] for k in ("answered", "abandoned", "overflowed", "callbacks", "robot")
    )
    assert steady["lost_calls"] == steady["placed"] - accounted
    assert steady["rings_measured"] >= steady["answered"] > 0
    (step,) = result["ladder"]
    assert step["placed"] == 2 and len(step["sampled_legs"]) + step["misrouted_samples"] == 1
    out = figures(result)
    assert set(TARGETS) <= set(out)
    assert {"bridge_cpu_ratio_vs_robot", "rtpengine_cpu_ratio", "bridged_failed_at"} <= set(out)
