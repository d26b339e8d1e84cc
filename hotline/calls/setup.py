"""What the SIP edge runs on, built from the settings: the recognizer (live, in decoder
processes or threads) and its warm-up, the prompts and the call flows' settings."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from asr.config import AsrConfig
from asr.offline import read_wav
from asr.recognizer import AsrError
from core.settings import Settings
from telephony.endpoint import (
    SAMPLE_RATE,
)
from telephony.flows import FlowSettings
from telephony.prompts import PromptError, PromptSet, convert_wav

if TYPE_CHECKING:
    from asr.processes import DecoderProcesses
    from asr.vosk_engine import VoskRecognizer

log = logging.getLogger(__name__)


def asr_config(settings: Settings) -> AsrConfig:
    asr = settings.asr
    extra = {} if asr.max_live_streams is None else {"max_live_streams": asr.max_live_streams}
    return AsrConfig(
        model_path=asr.model_path,
        pool_size=asr.pool_size,
        live_lag_s=asr.live_lag_s,
        live_backlog_limit_s=asr.live_backlog_limit_s,
        live_batch_s=asr.live_batch_s,
        quiet_engine_log=asr.quiet_engine_log,
        huge_pages=asr.huge_pages,
        **extra,
    )


# Up to this many CPUs the SIP edge decodes in its own threads by default. On 2 cores the
# decoder processes carried fewer live calls than the same decoding in the SIP process's
# threads in every 3-repeat run of bench/calls.py (live-ASR ratio, min / median: processes
# 0.67 / 0.88, 0.75 / 0.88, 0.62 / 0.78, 0.9 / 1.0 on a quiet machine; threads 1.11 / 1.11,
# 1.0 / 1.0, 1.18 / 1.2 on the same quiet machine — README, figures); from 3 CPUs on, one
# GIL serving every decoder is the bound the processes remove (reasoned, not measured).
THREADS_UP_TO_CPUS = 2


def default_decode_processes(cpus: int | None) -> int:
    """`asr.decode_processes` unset: 0 (the SIP process's threads) on a host of up to
    `THREADS_UP_TO_CPUS` CPUs, else one decoder process per CPU."""
    cpus = cpus or 1
    return 0 if cpus <= THREADS_UP_TO_CPUS else cpus


def live_recognizer(settings: Settings) -> VoskRecognizer | DecoderProcesses:
    """The SIP edge's recognizer: decoder processes (one per CPU by default from 3 CPUs
    on), or the engine in this process's threads (`asr.decode_processes` 0, the default on
    1–2 CPUs). Call `load()` before use and `close()` (processes) at the end."""
    from asr.processes import DecoderProcesses
    from asr.vosk_engine import VoskRecognizer

    config = asr_config(settings)
    count = settings.asr.decode_processes
    if count is None:
        count = default_decode_processes(os.cpu_count())
    if count == 0:
        return VoskRecognizer(config)
    return DecoderProcesses(
        config, processes=count, threads=decode_threads(settings.asr.decode_threads, count)
    )


def decode_threads(setting: int | None, processes: int) -> int:
    """Decoder threads per decoder process: the setting, else the CPUs shared out among the
    processes (one each at the default of one process per CPU). More runnable decoders than
    cores cost CPU, not capacity: on 2 cores, 2 processes of 2 threads spent ~18 % more CPU
    per call than 2 of 1 and carried 18 live calls where those carried 22 (bench/calls.py)."""
    if setting is not None:
        return setting
    return max(1, math.ceil((os.cpu_count() or 1) / max(1, processes)))


def decode_slots(setting: int | None) -> int:
    """Live streams decoding at once in the SIP process's threads (`asr.decode_processes`
    0): the setting, else one per CPU plus one, so that a core does not idle while a
    decoder waits for the GIL (asr.live.DecodeSlots)."""
    return setting or (os.cpu_count() or 1) + 1


def warm_recognizers(
    settings: Settings,
    recognizer: VoskRecognizer | DecoderProcesses,
    prompts: PromptSet,
    stop: threading.Event,
) -> int:
    """Warm the live pool at start (the SIP edge runs this in a thread of its own while it
    already answers calls); logs what it did, never raises. Returns how many were warmed."""
    asr = settings.asr
    config = recognizer.config
    count = (
        min(config.max_live_streams, config.pool_limit)
        if asr.warm_recognizers is None
        else asr.warm_recognizers
    )
    if count <= 0:
        return 0
    began = time.monotonic()
    try:
        if asr.warmup_audio is None:
            pcm = prompts.pcm("greeting")
            source = "the greeting prompt"
        else:
            with tempfile.TemporaryDirectory(prefix="hotline-warmup-") as tmp:
                converted = Path(tmp) / "warmup.wav"
                convert_wav(asr.warmup_audio, converted)  # 8 kHz 16-bit mono
                pcm, _ = read_wav(converted)
            source = str(asr.warmup_audio)
        warmed = recognizer.warm(pcm, count=count, sample_rate=SAMPLE_RATE, stop=stop)
    except (AsrError, PromptError, OSError, wave.Error) as exc:
        if stop.is_set():  # the edge stops: its decoders went first
            log.info("ASR warm-up stopped with the edge (%s)", exc)
            return 0
        log.error("ASR warm-up skipped: %s (the first live calls decode on fresh recognizers)", exc)
        return 0
    log.info(
        "ASR warm-up: %d recognizer(s) warmed on %s (%.1f s of audio) in %.1f s",
        warmed,
        source,
        len(pcm) / 2 / SAMPLE_RATE,
        time.monotonic() - began,
    )
    return warmed


def prompt_set(settings: Settings, *, language: str | None = None) -> PromptSet:
    """The prompts the SIP edge plays: synthesised at setup, recorded ones where configured."""
    t = settings.telephony
    overrides = dict(t.prompt_wavs)
    if t.greeting_wav is not None:
        overrides["greeting"] = t.greeting_wav
    return PromptSet(
        settings.prompts_dir, language=language or t.prompt_language, overrides=overrides
    )


def flow_settings(settings: Settings) -> FlowSettings:
    return FlowSettings(
        recording_dir=settings.recording_dir,
        menu_enabled=settings.telephony.menu_enabled,
        tz=settings.tz,
    )
