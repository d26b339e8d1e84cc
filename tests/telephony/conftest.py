"""Fixtures of the media tests: a raw RTP ``peer``, and ``sessions`` stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telephony.rtp_session import RtpSession
from tests.telephony.rtp_peers import Peer


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def sessions() -> Iterator[list[RtpSession]]:
    made: list[RtpSession] = []
    yield made
    for s in made:
        s.stop()
