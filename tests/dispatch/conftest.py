"""Fixtures of the dispatch tests: the escalation scene and a session factory on the test's
savepoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import Session

from tests.dispatch.escalation_scene import Scene, savepoint_factory


@pytest.fixture
def scene(session: Session) -> Scene:
    return Scene(session)


@pytest.fixture
def factory(session: Session) -> Callable[[], Session]:
    return savepoint_factory(session)
