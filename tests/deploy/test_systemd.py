"""deploy/systemd: the units are ones systemd accepts (`systemd-analyze verify`), start the
`hotline` commands that exist with options they take, and carry the restart policy, limits
and hardening a production host needs."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from core.settings import Settings, TelephonySettings

UNITS = Path(__file__).parents[2] / "deploy" / "systemd"
HOTLINE = Path(sys.executable).with_name("hotline")
PROCESSES = [
    "hotline-web.service",
    "hotline-web@.service",
    "hotline-worker.service",
    "hotline-beat.service",
    "hotline-sip.service",
]


def parse(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((UNITS / name).read_text("utf-8"))
    return unit


def test_given_the_units_when_systemd_analyze_verifies_them_then_nothing_is_reported(
    tmp_path,
):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (apt-get install systemd)"
    for path in [*UNITS.glob("*.service"), *UNITS.glob("*.target")]:
        text = path.read_text("utf-8").replace("/opt/hotline/bin/hotline", str(HOTLINE))
        (tmp_path / path.name).write_text(text, "utf-8")
    # a template is verified as an instance of it
    shutil.copy(tmp_path / "hotline-web@.service", tmp_path / "hotline-web@8001.service")
    (tmp_path / "hotline-web@.service").unlink()
    units = sorted(str(p) for p in tmp_path.iterdir())

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # an unknown or misspelt directive is only a warning there


@pytest.mark.parametrize("name", PROCESSES)
def test_given_a_process_unit_when_its_command_is_asked_for_help_then_the_cli_has_it(name):
    argv = shlex.split(parse(name)["Service"]["ExecStart"].replace("%i", "8001"))
    assert argv[0] == "/opt/hotline/bin/hotline"

    result = subprocess.run(
        [str(HOTLINE), *argv[1:], "--help"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: hotline " + argv[1] in result.stdout


@pytest.mark.parametrize("name", PROCESSES)
def test_given_a_process_unit_then_it_restarts_is_limited_and_is_hardened(name):
    unit = parse(name)
    service = unit["Service"]
    assert unit["Unit"]["StartLimitBurst"] and unit["Unit"]["StartLimitIntervalSec"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "hotline" and service["Group"] == "hotline"
    assert service["EnvironmentFile"] == "/etc/hotline/hotline.env"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/hotline"
    assert service["CapabilityBoundingSet"] == ""
    assert service["SystemCallFilter"] == "@system-service"
    for limit in ("MemoryMax", "LimitNOFILE", "TasksMax"):
        assert service[limit], limit
    # one multiprocess directory, emptied (once, before any of them) by its own unit
    assert service["Environment"] == "PROMETHEUS_MULTIPROC_DIR=/var/lib/hotline/metrics"
    assert "hotline-metrics-dir.service" in unit["Unit"]["Requires"]
    assert "hotline-metrics-dir.service" in unit["Unit"]["After"]


def test_given_the_sip_unit_then_systemd_waits_out_the_drain_before_killing():
    service = parse("hotline-sip.service")["Service"]
    drain = TelephonySettings().drain_timeout_s
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= drain + 15


def test_given_the_metrics_dir_unit_when_it_runs_then_the_directory_is_empty(tmp_path):
    unit = parse("hotline-metrics-dir.service")
    assert unit["Unit"]["StopWhenUnneeded"] == "yes"
    command = unit["Service"]["ExecStart"].replace("/var/lib/hotline", str(tmp_path))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_4242.db").write_bytes(b"last run")
    (tmp_path / "core.db").write_bytes(b"kept")

    subprocess.run(shlex.split(command), check=True, timeout=10)

    assert list((tmp_path / "metrics").iterdir()) == []
    assert (tmp_path / "core.db").read_bytes() == b"kept"


def test_given_the_example_env_file_when_loaded_by_the_shell_then_every_name_is_a_setting() -> None:
    """Every HOTLINE_ variable the example sets (and the commented ones, uncommented) names
    a setting, and with a secret filled in production settings load from it."""
    example = (UNITS / "hotline.env.example").read_text("utf-8")
    lines = [line.removeprefix("# ") for line in example.splitlines()]
    assignments = "\n".join(line for line in lines if re.match(r"[A-Z_]+=", line))
    result = subprocess.run(
        ["bash", "-c", f"set -a\n{assignments}\nenv -0"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    names = [name for name in env if name.startswith("HOTLINE_")]
    assert len(names) >= 10
    for name in names:
        model: type[BaseModel] = Settings
        *parents, leaf = name.removeprefix("HOTLINE_").lower().split("__")
        for part in parents:
            model = model.model_fields[part].annotation  # type: ignore[assignment]
        assert leaf in model.model_fields, name
    env["HOTLINE_SECRET_KEY"] = "x" * 48
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("HOTLINE_")]:
            patch.delenv(name)
        for name in names:
            patch.setenv(name, env[name])
        settings = Settings()
    assert settings.environment == "production"
    assert settings.telephony.allow == ["10.0.0.5/32"]
    assert str(settings.data_dir) == "/var/lib/hotline"
