"""SDP offer/answer for the SIP edge (RFC 3264 over RFC 4566): reading the peer's audio
address and codec, and writing ours. Audio is PCMU or PCMA, with RFC 4733 telephone-events
(DTMF) when the peer offers them; pyVoIP parses the SDP (``sip_message``), nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone hits a circular import in 1.6.8)
from pyVoIP.RTP import RTPProtocol

from telephony import sip_message as sm

PCMU, PCMA = 0, 8
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
DTMF_PT = 101


@dataclass
class Offer:
    """Where the peer takes our RTP, and what to send it."""

    address: str
    port: int
    payload_type: int
    dtmf_payload_type: int | None


def read_offer(message: sm.LenientSIPMessage) -> tuple[Offer | None, str]:
    """The remote RTP address and the codec to use from an SDP, or (None, why not)."""
    if message.body_error:
        return None, message.body_error
    if not message.raw_message.body:
        return None, "no SDP offer"
    if "application/sdp" not in message.raw_message.get("Content-Type").lower():
        return None, "body is not application/sdp"
    body = message.body
    audio = [m for m in body.get("m", []) if m["type"] == "audio" and m["port"] != 0]
    if not audio:
        return None, "no audio stream"
    media = audio[0]
    if media["protocol"] != RTPProtocol.AVP:
        return None, f"transport {media['protocol'].value} not supported"
    connections = body.get("c") or []
    if not connections:
        return None, "no c= line"
    chosen = None
    dtmf = None
    for pt in media["methods"]:
        rtpmap = media["attributes"].get(pt, {}).get("rtpmap", {})
        name = rtpmap.get("name", "").lower()
        if chosen is None and pt in ("0", "8"):
            chosen = int(pt)
        if name == "telephone-event" and rtpmap.get("frequency") == "8000" and pt.isdigit():
            dtmf = int(pt)
    if chosen is None:
        return None, "no offered codec is PCMU or PCMA"
    return Offer(connections[-1]["address"], media["port"], chosen, dtmf), ""


def build_sdp(
    *,
    host: str,
    port: int,
    session_id: int,
    version: int,
    payload_types: list[int],
    dtmf: int | None,
) -> bytes:
    """Our SDP: an offer lists every codec we take, an answer the one chosen."""
    pts = payload_types + ([dtmf] if dtmf is not None else [])
    lines = [
        "v=0",
        f"o=hotline {session_id} {version} IN IP4 {host}",
        "s=hotline",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
    ]
    lines += [f"a=rtpmap:{pt} {CODECS[pt]}/8000" for pt in payload_types]
    if dtmf is not None:
        lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()
