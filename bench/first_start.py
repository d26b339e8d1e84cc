"""The first start of the embedded platform, as a new user meets it: `hotline run` on an empty
data directory (the demo city seeded, the voice prompts synthesised, the speech model loaded)
and then a second start on the same data, timed to

- ``web_s``: the sign-in page answers (a usable web page: the issue's ≤ 15 s),
- ``sip_s``: the SIP edge listens (it takes calls),
- ``warm_s``: the live decoders are warmed (the first calls decode at full speed),

and the memory of the whole process tree once warm: ``pss_mb`` (proportional set size: a page
shared by n processes counts 1/n in each, so the sum is what the tree really holds) beside
``rss_mb`` (each process's resident size summed: shared pages counted once per process), and
the decoder processes' share of it.

    .venv/bin/python bench/first_start.py --json [--repeats 3]

Loopback only; each start is bounded (``--timeout``) and stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, say
from tests.services import free_port

HOTLINE = Path(sys.executable).parent / "hotline"
TARGET_WEB_S = 15.0


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        parents.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    found, todo = [pid], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of a process in kB, from smaps_rollup; (0, 0) when it is gone."""
    values = {"Pss": 0, "Rss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values["Pss"], values["Rss"]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def start_once(data: Path, timeout: float) -> dict[str, Any]:
    web_port, sip_port = free_port(), free_port()
    environment = {n: v for n, v in os.environ.items() if not n.startswith("HOTLINE_")}
    began = time.monotonic()
    proc = subprocess.Popen(
        [str(HOTLINE), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **environment,
            "HOTLINE_DATA_DIR": str(data),
            "HOTLINE_WEB__HOST": "127.0.0.1",
            "HOTLINE_WEB__PORT": str(web_port),
            "HOTLINE_TELEPHONY__HOST": "127.0.0.1",
            "HOTLINE_TELEPHONY__PORT": str(sip_port),
        },
        start_new_session=True,
    )
    lines: list[str] = []
    marks: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            now = time.monotonic() - began
            if "SIP edge listening" in line:
                marks.setdefault("sip_s", now)
            if "ASR warm-up" in line:
                marks.setdefault("warm_s", now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{web_port}/signin"
    try:
        deadline = began + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if "web_s" not in marks:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        marks["web_s"] = time.monotonic() - began
                except httpx.HTTPError:
                    pass
            if {"web_s", "sip_s", "warm_s"} <= marks.keys():
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            raise SystemExit(f"hotline run exited {proc.returncode}:\n{''.join(lines)[-3000:]}")
        time.sleep(1.0)  # the warm-up's last allocations settle
        pss = rss = decoder_pss = 0
        processes = 0
        for pid in _tree(proc.pid):
            p, r = _memory_kb(pid)
            pss, rss, processes = pss + p, rss + r, processes + 1
            if "asr.decoder_child" in _command(pid) or "asr.zygote" in _command(pid):
                decoder_pss += p
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    missing = {"web_s", "sip_s", "warm_s"} - marks.keys()
    if missing:
        raise SystemExit(f"not reached within {timeout} s: {sorted(missing)}")
    return {
        **{k: round(v, 2) for k, v in marks.items()},
        "processes": processes,
        "pss_mb": round(pss / 1024, 1),
        "rss_mb": round(rss / 1024, 1),
        "decoder_pss_mb": round(decoder_pss / 1024, 1),
    }


def _spread(runs: list[dict[str, Any]], key: str, worst: Any) -> dict[str, float]:
    values = [run[key] for run in runs]
    return {"median": round(statistics.median(values), 2), "worst": worst(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0, help="per start, seconds")
    args = parser.parse_args()
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for attempt in range(args.repeats):
        data = Path(tempfile.mkdtemp(prefix="hotline-first-start-")) / "var"
        try:
            say(f"run {attempt + 1}/{args.repeats}: first start")
            first.append(start_once(data, args.timeout))
            say(f"run {attempt + 1}/{args.repeats}: second start, same data")
            second.append(start_once(data, args.timeout))
        finally:
            shutil.rmtree(data.parent, ignore_errors=True)
    figures: dict[str, Any] = {"machine": machine(), "repeats": args.repeats}
    for label, runs in (("first", first), ("second", second)):
        for key in ("web_s", "sip_s", "warm_s"):
            figures[f"{label}_start_{key}"] = _spread(runs, key, max)
        for key in ("pss_mb", "rss_mb", "decoder_pss_mb"):
            figures[f"{label}_start_{key}"] = _spread(runs, key, max)
        figures[f"{label}_start_processes"] = runs[-1]["processes"]
    figures["web_s_target"] = TARGET_WEB_S
    figures["first_start_web_s_within_target"] = (
        figures["first_start_web_s"]["worst"] <= TARGET_WEB_S
    )
    figures["runs"] = {"first": first, "second": second}
    print(json.dumps(figures, indent=None if args.json else 1, ensure_ascii=False))


if __name__ == "__main__":
    main()
