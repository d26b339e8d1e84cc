"""asr/ stays an engine room: it knows nothing of calls or tickets, and only one module of
it touches vosk, so the engine can be replaced (or faked) in one place."""

import ast
from pathlib import Path

import pytest

import asr

ASR_DIR = Path(asr.__file__).parent
FORBIDDEN = ("tickets", "telephony", "hotline", "dispatch", "web")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(ASR_DIR.glob("*.py")), ids=lambda p: p.name)
def test_given_an_asr_module_then_it_imports_no_other_domain_and_only_the_engine_imports_vosk(path):
    roots = {name.split(".")[0] for name in imported_modules(path)}
    assert not roots & set(FORBIDDEN)
    if path.name != "vosk_engine.py":
        assert "vosk" not in roots
