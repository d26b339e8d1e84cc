"""deploy/logrotate/hotline run by the real logrotate (paths and user moved to a tmp dir):
logs rotate, recordings older than the retention go, newer ones stay, and the retention
runs again the next day."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

CONF = Path(__file__).parents[2] / "deploy" / "logrotate" / "hotline"
DAY = 86400


def run(conf: Path, state: Path) -> None:
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    assert logrotate, "logrotate is missing: apt-get install logrotate"
    result = subprocess.run(
        [logrotate, "-f", "-s", str(state), str(conf)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_given_logs_and_recordings_when_logrotate_runs_twice_then_old_recordings_go(tmp_path):
    logs, recordings = tmp_path / "log", tmp_path / "recordings"
    logs.mkdir()
    recordings.mkdir()
    me = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
    text = CONF.read_text("utf-8")
    assert "RECORDING_RETENTION_DAYS=180" in text
    text = (
        text.replace("/var/log/hotline", str(logs))
        .replace("/var/lib/hotline/recordings", str(recordings))
        .replace("hotline hotline", f"{me} {me}")
    )
    conf = tmp_path / "hotline"
    conf.write_text(text, "utf-8")
    conf.chmod(0o644)
    (logs / "web.log").write_text("a line\n")
    (recordings / ".retention").touch()
    old, new = recordings / "old-call.wav", recordings / "new-call.wav"
    for path, age_days in ((old, 181), (new, 179)):
        path.write_bytes(b"RIFF")
        at = time.time() - age_days * DAY
        os.utime(path, (at, at))

    run(conf, tmp_path / "state")

    assert not old.exists() and new.exists()
    assert (logs / "web.log.1").read_text() == "a line\n"
    assert (recordings / ".retention").exists()  # so tomorrow's run happens too
    at = time.time() - 200 * DAY
    os.utime(new, (at, at))
    run(conf, tmp_path / "state")
    assert not new.exists()
