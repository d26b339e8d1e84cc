"""bench/acd.py's steady load in rtpengine mode, on a tiny load through the real `hotline sip`
and a real rtpengine: the edge re-INVITEs both phones of every answered call to rtpengine,
the load's callers and seats answer it (their scenarios' re-INVITE answers), and every
placed call is accounted for, as in the own-relay mode. No timing is asserted: the machine is
shared."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench._acd_load import Load, steady_load  # noqa: E402
from bench._acd_platform import sign_in_all  # noqa: E402
from bench.acd import open_rig  # noqa: E402


def test_given_rtpengine_mode_then_the_steady_load_runs_through_rtpengine_and_loses_nothing():
    load = Load(agents=2, calls=6, talk_s=2.0, wrap_up_s=1.0, occupancy=0.5)
    with open_rig(
        db="sqlite",
        sampled=1,
        operators=2,
        wrap_up_s=load.wrap_up_s,
        max_queue=8,
        warmed=False,
        media_relay="rtpengine",
    ) as (rig, info):
        assert info["registered"] == {"ok": 3, "failed": 0}
        sign_in_all(rig.url, rig.bell, rig.sampled + rig.load)
        steady = steady_load(rig, load)
        log = rig.platform.log.read_text(errors="replace")
    assert steady["placed"] == load.calls and steady["records"] == load.calls
    # Every phone answered the edge's re-INVITE: no call of sipp's failed on it.
    ends = (steady["sipp_failed"], steady["sipp_not_ended"], steady["seat_sipp_failed"])
    assert ends == (0, 0, 0)
    assert steady["lost_calls"] == 0 and steady["answered"] > 0
    assert log.count("media on rtpengine") >= steady["answered"]
    assert steady["rings_measured"] >= steady["answered"]
    assert steady["answered_within_15s_share"] is not None
