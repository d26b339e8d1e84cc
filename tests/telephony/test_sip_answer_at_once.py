"""An INVITE the edge answers at once gets its 200 with no 100 Trying before it (RFC 3261
§17.2.1: a 100 is owed only when no response goes out within 200 ms); one that rings first
still gets 100 Trying and 180 Ringing at once."""

from __future__ import annotations

import socket

from tests.telephony.sip_peers import HOST, start_edge


def _invite(port: int, rtp_port: int, call_id: str) -> bytes:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\n"
    )
    return (
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n"
        f"From: <sip:13800000000@127.0.0.1:{port}>;tag=t-{call_id}\r\n"
        f"To: <sip:12345@127.0.0.1>\r\nCall-ID: {call_id}@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:c@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def _first_two(edge_address: tuple[str, int], rtp_port: int, call_id: str) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        invite = _invite(sock.getsockname()[1], rtp_port, call_id)
        sock.sendto(invite, edge_address)
        first = sock.recv(65535)
        sock.sendto(invite, edge_address)  # a retransmission: the latest response again
        return [first, sock.recv(65535)]


def test_given_an_edge_that_answers_at_once_then_the_first_response_is_the_200(edges, rtp):
    harness = start_edge(None)
    edges.append(harness)

    first, again = _first_two(harness.edge.address, rtp.port, "atonce")

    assert first.startswith(b"SIP/2.0 200 ") and b"m=audio" in first
    assert again.startswith(b"SIP/2.0 200 ")


def test_given_an_edge_that_rings_first_then_100_trying_and_180_ringing_at_once(edges, rtp):
    harness = start_edge(None, answer_delay=2.0)
    edges.append(harness)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(1)
        sock.sendto(_invite(sock.getsockname()[1], rtp.port, "rings"), harness.edge.address)
        responses = [sock.recv(65535), sock.recv(65535)]

    assert responses[0].startswith(b"SIP/2.0 100 ") and responses[1].startswith(b"SIP/2.0 180 ")
