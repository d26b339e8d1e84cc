"""`hotline prompts build` and `hotline sip` as the operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from core.settings import get_settings
from hotline.calls import setup
from tests.conftest import wait_until
from tests.telephony.sip_peers import dominant_frequency, free_udp_port, output, run_sipp

HOTLINE = Path(sys.executable).parent / "hotline"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOTLINE_") or k == "HOTLINE_SECRET_KEY"
    }
    return {**env, "HOTLINE_DATA_DIR": str(tmp_path / "var"), **extra}


def test_prompts_build_synthesises_missing_prompts_once(tmp_path, monkeypatch):
    for name, value in _env(tmp_path, HOTLINE_TELEPHONY__PROMPT_LANGUAGE="ko").items():
        if name.startswith("HOTLINE_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(app, ["prompts", "build"])
        again = runner.invoke(app, ["prompts", "build"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert "0 already up to date" in first.output
    assert (tmp_path / "var" / "prompts" / "ko" / "greeting.wav").is_file()
    assert again.output.startswith("0 prompt(s) generated")


def test_given_a_recorded_greeting_when_prompts_built_then_it_is_the_greeting_played(
    tmp_path, monkeypatch
):
    recorded = tmp_path / "greeting-44k-stereo.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "44100",
            "-c",
            "2",
            "-b",
            "16",
            str(recorded),
            "synth",
            "1.5",
            "sine",
            "440",
        ],
        check=True,
    )
    env = _env(
        tmp_path,
        HOTLINE_TELEPHONY__PROMPT_LANGUAGE="ko",
        HOTLINE_TELEPHONY__GREETING_WAV=str(recorded),
    )
    for name, value in env.items():
        if name.startswith("HOTLINE_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["prompts", "build"])
        prompts = setup.prompt_set(get_settings())
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    greeting = prompts.pcm("greeting")
    assert abs(len(greeting) - 1.5 * 8000 * 2) <= 2 * 80  # 8 kHz mono 16-bit, 1.5 s
    assert dominant_frequency(greeting) == pytest.approx(440, abs=10)


def test_given_a_broken_greeting_wav_when_prompts_built_then_one_clear_error(tmp_path, monkeypatch):
    broken = tmp_path / "greeting.wav"
    broken.write_bytes(b"RIFF not really")
    env = _env(
        tmp_path,
        HOTLINE_TELEPHONY__PROMPT_LANGUAGE="ko",
        HOTLINE_TELEPHONY__GREETING_WAV=str(broken),
    )
    for name, value in env.items():
        if name.startswith("HOTLINE_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["prompts", "build"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "greeting" in result.output and "Traceback" not in result.output


def test_sip_command_listens_answers_options_and_stops_on_sigterm(tmp_path):
    port = free_udp_port()
    env = _env(tmp_path, HOTLINE_TELEPHONY__HOST="127.0.0.1", HOTLINE_TELEPHONY__PORT=str(port))
    subprocess.run([str(HOTLINE), "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [str(HOTLINE), "sip"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()
    try:
        wait_until(
            lambda: "SIP edge listening" in "".join(lines) or proc.poll() is not None,
            timeout=60,
            message="the SIP edge",
        )
        assert proc.poll() is None, "".join(lines)
        result = run_sipp("uac_options.xml", target=f"127.0.0.1:{port}")
        assert result.returncode == 0, output(result)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert f"sip:12345@127.0.0.1:{port}" in text and "only this machine may call" in text
    assert "callbacks:  off" in text and "stopping the SIP edge" in text
