"""The real Vosk model, loaded once per xdist worker, made deterministic (no dither) so a
recording decodes to the same words every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asr.config import AsrConfig
from asr.processes import DecoderProcesses
from asr.vosk_engine import VoskRecognizer
from tests.speech import deterministic_vosk_model


@pytest.fixture(scope="session")
def vosk_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deterministic_vosk_model(tmp_path_factory.mktemp("vosk"))


@pytest.fixture(scope="session")
def vosk_config(vosk_model_dir: Path) -> AsrConfig:
    return AsrConfig(model_path=vosk_model_dir, pool_size=4, max_live_streams=2)


@pytest.fixture(scope="session")
def recognizer(vosk_config: AsrConfig) -> VoskRecognizer:
    """Shared by the tests of a worker, so its pool stays warm: a test that needs a pool of
    its own builds a VoskRecognizer (the loaded model is shared per process anyway)."""
    shared = VoskRecognizer(vosk_config)
    shared.load()
    return shared


@pytest.fixture(scope="session")
def decoder_processes(vosk_config: AsrConfig) -> Iterator[DecoderProcesses]:
    """Two real decoder processes of two threads each on the deterministic model, shared by
    a worker's tests (each loads the model, ~1.3 s); a test that kills or closes one builds
    its own."""
    processes = DecoderProcesses(vosk_config, processes=2, threads=2)
    processes.load()
    try:
        yield processes
    finally:
        processes.close()
