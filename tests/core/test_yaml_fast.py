"""core.yaml_fast: libyaml's speed, PyYAML's values and PyYAML's error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import yaml_fast

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [
    ROOT / "dispatch/data/rules-zh.yaml",
    ROOT / "dispatch/data/synonyms-zh.yaml",
    ROOT / "hotline/knowledge/data/demo_articles.yaml",
    ROOT / "hotline/knowledge/data/synonyms.yaml",
]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_documents_read_the_same_as_with_pyyamls_own_parser(path: Path) -> None:
    text = path.read_text("utf-8")
    assert yaml_fast.safe_load(text) == yaml.safe_load(text)


def test_libyaml_is_used_where_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: starts are seconds slower"
    fast: object = yaml_fast._FAST
    assert fast is yaml.CSafeLoader


@pytest.mark.parametrize(
    "text",
    ["rules:\n  - name: a\n   bad: indent\n", "a: [1, 2\n", "a: !!python/object:os.system x\n"],
)
def test_a_bad_document_is_refused_in_pyyamls_words(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as ours:
        yaml_fast.safe_load(text)
    with pytest.raises(yaml.YAMLError) as theirs:
        yaml.safe_load(text)
    assert str(ours.value) == str(theirs.value)
