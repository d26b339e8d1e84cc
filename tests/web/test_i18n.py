"""The pages' catalogues: every message id in the templates and web/pages is translated in
Simplified Chinese and English (a new string without its translation fails here), the
placeholders of a translation are those of its message id, and the catalogue file is what
`scripts/catalogues` would extract today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from web.pages import i18n

ROOT = Path(__file__).resolve().parents[2]
METHODS = [("**.py", "python"), ("**.html", "jinja2")]
OPTIONS = {"**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _message_ids() -> set[str]:
    found: set[str] = set()
    for folder in ("web/pages", "web/templates"):
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / folder, METHODS, options_map=OPTIONS, keywords=KEYWORDS
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _catalogue(locale: str):
    with (i18n.LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=locale)


def test_the_code_and_templates_have_message_ids():
    assert len(_message_ids()) > 50


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_message_id_is_translated(locale):
    catalogue = _catalogue(locale)
    translated = {
        m.id: m.string
        for m in catalogue
        if m.id and m.string and not m.fuzzy and (not isinstance(m.string, tuple) or all(m.string))
    }
    missing = sorted(_message_ids() - set(translated))
    assert not missing, (
        f"untranslated in {locale} (run scripts/catalogues, then translate): {missing}"
    )


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_translations_keep_the_placeholders(locale):
    for message in _catalogue(locale):
        if message.id and isinstance(message.id, str) and message.string:
            assert set(PLACEHOLDER.findall(message.id)) == set(
                PLACEHOLDER.findall(message.string)
            ), message.id


def test_the_chinese_catalogue_is_chinese():
    zh = i18n.catalogue("zh_CN")
    assert zh.gettext("Sign in") == "登录"
    assert zh.gettext("Tickets") == "工单"
    for message in _catalogue("zh_CN"):
        if message.id and isinstance(message.string, str) and len(message.id) > 12:
            assert re.search(r"[\u4e00-\u9fff]", message.string), message.id


def test_a_message_id_not_in_the_catalogue_falls_back_to_itself():
    i18n.set_locale("zh_CN")
    assert i18n.gettext("no such message id") == "no such message id"
