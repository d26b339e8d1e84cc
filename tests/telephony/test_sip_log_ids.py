"""The SIP edge binds a call's Call-ID to the log context of the threads that serve it
(core.logging_setup): every line a call's handler logs, and the task its end queues,
carry it."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from core.logging_setup import current_ids
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge
from tests.telephony.sip_peers import HOST, RtpPeer, output, run_sipp


@pytest.fixture
def rtp() -> Iterator[RtpPeer]:
    peer = RtpPeer()
    yield peer
    peer.close()


def test_a_calls_handler_and_its_end_log_with_its_call_id(rtp):
    seen: queue.Queue[tuple[str, str, dict[str, str]]] = queue.Queue()
    edge = SipEdge(SipConfig(host=HOST, port=0, rtp_low=20000, rtp_high=30000))

    def on_call(call) -> None:
        seen.put(("call", call.call_id, current_ids()))
        call.ended.wait(10)  # the caller hangs up

    edge.start(
        on_call=on_call,
        on_ended=lambda call: seen.put(("ended", call.call_id, current_ids())),
    )
    try:
        host, port = edge.address
        result = run_sipp(
            "uac_call.xml",
            target=f"{host}:{port}",
            keys={"rtp_port": rtp.port, "fmts": "0 101"},
            hold=200,
        )
        assert result.returncode == 0, output(result)
        events = [seen.get(timeout=10), seen.get(timeout=10)]
    finally:
        edge.stop()
    assert [kind for kind, _, _ in events] == ["call", "ended"]
    assert all(ids == {"call": call_id} for _, call_id, ids in events)
    assert current_ids() == {}  # the test's own thread: nothing bound
