"""Fixtures of the telephony tests: a raw RTP ``peer``, ``sessions`` stopped after the test,
and for the SIP edge tests the ``edges`` started and the caller's ``rtp``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telephony.rtp_session import RtpSession
from tests.telephony.rtp_peers import Peer
from tests.telephony.sip_peers import Harness, RtpPeer


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


@pytest.fixture
def edges() -> Iterator[list[Harness]]:
    """SIP edges started by the test (``tests.telephony.sip_peers.start_edge``), stopped after."""
    started: list[Harness] = []
    yield started
    for harness in started:
        harness.edge.stop()


@pytest.fixture
def rtp() -> Iterator[RtpPeer]:
    """The caller's media socket."""
    rtp_peer = RtpPeer()
    yield rtp_peer
    rtp_peer.close()
