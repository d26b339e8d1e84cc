"""cProfile for bench/pipeline.py and bench/calls.py: the hot spots of a profile as shares of
the profiled time, a profiler in every thread of a server process, merged, and `hotline sip`
with its threads named in the kernel (their CPU readable by name from /proc)."""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def hot_spots(stats: pstats.Stats, *, wall: float, top: int = 15) -> dict[str, Any]:
    """The functions with the most time, inclusive (cumulative) of project code and
    exclusive (own) of everything, as shares of the profiled wall time."""
    rows = []
    # The raw table pstats' own methods read; typeshed does not declare it.
    table = stats.stats  # type: ignore[attr-defined]
    for (path, line, func), (_, calls, own, cumulative, _) in table.items():
        ours = path.startswith(str(ROOT)) and "site-packages" not in path
        where = path
        if "site-packages/" in path:
            where = path.split("site-packages/", 1)[1]
        elif ours:
            where = os.path.relpath(path, ROOT)
        rows.append(
            {
                "at": f"{where}:{func}",
                "line": line,
                "calls": calls,
                "own_s": own,
                "cum_s": cumulative,
                "project": ours,
            }
        )

    def share(seconds: float) -> float:
        return round(100 * seconds / wall, 1)

    project = sorted(
        (r for r in rows if r["project"] and not r["at"].startswith("bench/")),
        key=lambda r: -r["cum_s"],
    )[:top]
    own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    return {
        "total_s": round(wall, 3),
        "cumulative_project": [
            {"at": r["at"], "calls": r["calls"], "pct": share(r["cum_s"])} for r in project
        ],
        "own_time": [{"at": r["at"], "calls": r["calls"], "pct": share(r["own_s"])} for r in own],
    }


class ThreadProfiles:
    """cProfile follows one thread; the sync routes run in a thread pool, so every new
    thread gets a profiler of its own and the stats are merged at the end. The timer is
    the thread's CPU time: one process saturates one core, so CPU is what limits it, and
    waits (row locks, the database, idle pool threads) would swamp a wall-clock profile."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()

    def dump(self, path: str) -> None:
        for profile in self.profiles:
            profile.disable()
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


# ---------------------------------------------------------------- hotline sip under the bench


def _name_native_thread(name: str) -> None:
    """The thread's Python name as its kernel name (``/proc/<pid>/task/<tid>/comm``, 15
    bytes), so a thread's CPU can be read from /proc by name (Python 3.11 does not do this)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME, the calling thread
    except (OSError, AttributeError):
        pass


def _named(*_: Any) -> None:
    _name_native_thread(threading.current_thread().name)
    sys.setprofile(None)  # once, at the thread's start: no cost afterwards


def _log_gc_pauses(path: Path, at_least_s: float = 0.01) -> None:
    """Append each garbage-collector pause of at least ``at_least_s`` to ``path``: the time,
    the generation, the pause and the objects it looked at."""
    import gc

    began: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        pause = time.perf_counter() - began[0]
        if pause >= at_least_s:
            with path.open("a") as out:
                generation = info["generation"]
                out.write(
                    f"{time.time():.3f} gen{generation} {pause * 1000:.1f} ms collected "
                    f"{info['collected']} objects {len(gc.get_objects(generation))}\n"
                )

    gc.callbacks.append(callback)


def run_cli_instrumented() -> None:
    """`python -m bench._profiling sip`: the `hotline` command with every thread named in
    the kernel (always) and, when ``HOTLINE_BENCH_PROFILE`` names a file, cProfile in every
    thread on its CPU clock, dumped there at exit (pstats format)."""
    from cli.app import app

    if os.environ.get("HOTLINE_BENCH_GC_LOG"):  # experiments: the collector's pauses
        _log_gc_pauses(Path(os.environ["HOTLINE_BENCH_GC_LOG"]))
    if os.environ.get("HOTLINE_BENCH_SWITCH_INTERVAL"):  # experiments: the GIL's hand-over
        sys.setswitchinterval(float(os.environ["HOTLINE_BENCH_SWITCH_INTERVAL"]))
    path = os.environ.get("HOTLINE_BENCH_PROFILE")
    profiles = ThreadProfiles() if path else None
    if profiles is not None:
        hook = profiles._start_in_thread

        def start(*args: Any) -> None:
            _name_native_thread(threading.current_thread().name)
            hook(*args)

        threading.setprofile(start)
        profiles._start_in_thread()
    else:
        threading.setprofile(_named)
    try:
        app(prog_name="hotline")
    finally:
        if profiles is not None and path:
            profiles.dump(path)


if __name__ == "__main__":
    run_cli_instrumented()
