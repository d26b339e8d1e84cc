"""The pages' language: Simplified Chinese by default, English switchable per person.

Message ids are English; the catalogues are ``web/locale/<locale>/LC_MESSAGES/messages.po``,
read once at start with Babel (no compiled ``.mo`` to keep in step, no build step). The
locale of the request being rendered lives in a context variable, so templates and Python
code call the same ``gettext`` and always speak the person's language.
``tests/web/test_i18n.py`` extracts every message id from the templates and ``web/pages`` and
fails on one a catalogue does not translate."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
LANGUAGE_NAMES = {"zh_CN": "简体中文", "en": "English"}  # each in its own language

_locale: ContextVar[str] = ContextVar("page_locale", default=DEFAULT_LOCALE)


class Catalogue:
    """One locale's translations, from its ``.po`` file."""

    def __init__(self, locale: str, path: Path) -> None:
        with path.open("rb") as f:
            catalog = read_po(f, locale=locale)
        self.locale = locale
        self._single: dict[str, str] = {}
        self._plural: dict[str, tuple[str, ...]] = {}
        for message in catalog:
            if not message.id or message.fuzzy:
                continue
            if isinstance(message.id, tuple):
                forms = tuple(message.string or ())
                if forms and all(forms):
                    self._plural[message.id[0]] = forms
            elif isinstance(message.string, str) and message.string:
                self._single[str(message.id)] = message.string
        self._plural_index: Callable[[int], int] = _plural_function(catalog.plural_expr)

    def gettext(self, message: str) -> str:
        return self._single.get(message, message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        forms = self._plural.get(singular)
        if forms is None:
            return singular if n == 1 else plural
        return forms[min(self._plural_index(n), len(forms) - 1)]


def _plural_function(expr: str) -> Callable[[int], int]:
    expr = expr.strip()
    if expr in ("0", ""):
        return lambda n: 0
    if expr.replace(" ", "") in ("(n!=1)", "n!=1"):
        return lambda n: int(n != 1)
    raise ValueError(f"unsupported plural expression {expr!r} in a catalogue")


@cache
def catalogue(locale: str) -> Catalogue:
    return Catalogue(locale, LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po")


def set_locale(locale: str) -> None:
    _locale.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def current_locale() -> str:
    return _locale.get()


def gettext(message: str, **values: Any) -> str:
    text = catalogue(_locale.get()).gettext(message)
    return text % values if values else text


def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
    text = catalogue(_locale.get()).ngettext(singular, plural, n)
    return text % {"num": n, **values}


_ = gettext


def N_(message: str) -> str:
    """Marks a message id for extraction where it is defined; translated where shown."""
    return message


def negotiate(*chosen: str | None, default: str) -> str:
    """The first supported of the person's choices (their account's, then the browser's
    language cookie), else the centre's default — not the browser's Accept-Language: a
    centre's staff share machines, and the centre decides its working language."""
    for locale in chosen:
        if locale in LOCALES:
            return locale
    return default if default in LOCALES else DEFAULT_LOCALE
