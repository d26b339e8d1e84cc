"""The settings, session factory and clock of code that runs outside a web request (Celery
tasks, the embedded runner), built lazily from Settings on first use. Tests and the
embedded runner inject their own with `set_runtime`. Imports no domain."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlmodel import Session

from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory
from core.settings import Settings
from core.settings import get_settings as _settings_from_env

SessionFactory = Callable[[], Session]

_lock = threading.Lock()
_settings: Settings | None = None
_session_factory: SessionFactory | None = None
_clock: Clock | None = None


def set_runtime(
    *,
    settings: Settings | None = None,
    session_factory: SessionFactory | None = None,
    clock: Clock | None = None,
) -> None:
    """Use these instead of the ones built from the environment; None leaves one as is."""
    global _settings, _session_factory, _clock
    with _lock:
        if settings is not None:
            _settings = settings
        if session_factory is not None:
            _session_factory = session_factory
        if clock is not None:
            _clock = clock


def reset_runtime() -> None:
    """Forget every override and everything built, so the next use starts afresh."""
    global _settings, _session_factory, _clock
    with _lock:
        _settings = _session_factory = _clock = None


def get_settings() -> Settings:
    return _settings or _settings_from_env()


def get_session_factory() -> SessionFactory:
    global _session_factory
    with _lock:
        if _session_factory is None:
            _session_factory = make_session_factory(make_engine(get_settings().db_url))
        return _session_factory


def get_clock() -> Clock:
    return _clock or SystemClock()


def keep_start_up_out_of_full_collections() -> int:
    """Once a long-running process has started (its models, rules, dictionaries, the ORM's
    metadata loaded), move every object there is into the collector's permanent generation
    (``gc.freeze``), so that its full passes look only at what came after. A full pass
    stops every thread: in `hotline sip` carrying 400-500 calls, passes over ~200,000
    objects took up to 255 ms (bench/calls.py, HOTLINE_BENCH_GC_LOG), and a stop that long
    cut a fifth of a second out of the recordings of the calls whose audio it held up.
    Returns how many objects were frozen."""
    import gc

    gc.collect()  # what start-up left for the collector goes first, not frozen forever
    gc.freeze()
    return gc.get_freeze_count()
