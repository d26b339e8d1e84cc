"""The house rules the suite enforces: the layer contract (import-linter), lint and format
(ruff) and types (mypy), all as configured in pyproject.toml — so a back arrow, a cycle, an
unformatted file or a type error is a red test, not a review comment."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
LAYERS = ["cli", "web", "hotline", "dispatch", "accounts", "telephony | asr | tickets", "core"]


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


def importlinter() -> dict:
    return CONFIG["tool"]["importlinter"]


def project_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}


def test_given_the_layer_contract_then_it_names_every_package_in_order_and_ignores_nothing():
    layers = [c for c in importlinter()["contracts"] if c["type"] == "layers"]
    assert len(layers) == 1 and layers[0]["layers"] == LAYERS
    assert set(importlinter()["root_packages"]) == project_packages()
    assert all("ignore_imports" not in c for c in importlinter()["contracts"])


def test_given_the_tree_then_every_import_points_down_the_layers():
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("core/clock.py", "import tickets.models"),  # the ground reaching up
        ("tickets/lifecycle.py", "import telephony.codecs"),  # siblings that must not meet
        ("dispatch/calendar.py", "import hotline.intake"),  # a domain reaching the application
    ],
)
def test_given_a_back_arrow_then_the_contract_is_broken(tmp_path, module, line):
    for package in project_packages():
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text("utf-8") + f"\n{line}  # noqa\n", "utf-8")
    result = subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode != 0
    assert (
        "BROKEN" in result.stdout and module.removesuffix(".py").replace("/", ".") in result.stdout
    )


def test_given_the_tree_then_ruff_finds_nothing():
    result = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_the_tree_then_it_is_formatted():
    result = run(str(BIN / "ruff"), "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_the_tree_then_mypy_finds_no_type_error(tmp_path):
    result = run(str(BIN / "mypy"), "--cache-dir", str(tmp_path / "mypy-cache"))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


def test_given_the_project_then_no_module_passes_600_lines_without_saying_why():
    over = []
    for path in sorted(ROOT.glob("**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "build"} or "migrations" in rel.parts:
            continue
        text = path.read_text("utf-8")
        if text.count("\n") > 600 and "Over 600 lines because" not in text[:3000]:
            over.append(f"{rel}: {text.count(chr(10))} lines")
    assert not over, "split these by responsibility, or say why in the opening comment: " + (
        "; ".join(over)
    )
