"""Running a benchmark as its user does, from the repository root, for its one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def bench_json(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """`python bench/SCRIPT ARGS...`'s stdout, parsed; a non-zero exit fails with its output."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout)
