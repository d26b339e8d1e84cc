"""SDP offer/answer for the SIP edge (RFC 3264 over RFC 4566): reading the peer's audio
address and codec, and writing ours. Audio is PCMU or PCMA, with RFC 4733 telephone-events
(DTMF) when the peer offers them; pyVoIP parses the SDP (``sip_message``), nothing else."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone hits a circular import in 1.6.8)
from pyVoIP.RTP import RTPProtocol

from telephony import sip_message as sm

PCMU, PCMA = 0, 8
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
DTMF_PT = 101
OUR_EVENTS = frozenset(range(17))  # RFC 4733 events we take: DTMF 0-9 * # A-D, and flash


@dataclass
class Offer:
    """Where the peer takes our RTP, and what to send it."""

    address: str
    port: int
    payload_type: int
    dtmf_payload_type: int | None
    dtmf_events: str = "0-15"  # for our answer's fmtp: theirs within ``OUR_EVENTS``


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
    events = ""
    if dtmf is not None:
        events = format_events(offered_events(message.raw_message.body, dtmf) & OUR_EVENTS)
        if not offered_events(message.raw_message.body, dtmf) & set(range(12)):
            dtmf, events = None, ""  # no DTMF digit among their events: nothing to read
    return Offer(connections[-1]["address"], media["port"], chosen, dtmf, events), ""


def offered_events(body: bytes, pt: int) -> set[int]:
    """The events of a telephone-event payload type by its fmtp (RFC 4733 §7.1.1: "0-15"
    when there is none)."""
    match = re.search(rb"^a=fmtp:%d[ \t]+([^\r\n]*)" % pt, body, re.M)
    events: set[int] = set()
    for part in (match.group(1).decode() if match else "0-15").replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):
            events.update(range(int(low), int(high or low) + 1))
    return events


def format_events(events: set[int]) -> str:
    """``{0, 1, …, 15, 16}`` as ``0-16``: ranges, comma separated."""
    ranges: list[str] = []
    for n in sorted(events):
        if ranges and n - 1 in events:
            low = ranges[-1].split("-")[0]
            ranges[-1] = f"{low}-{n}"
        else:
            ranges.append(str(n))
    return ",".join(ranges)


def address_problem(offer: Offer, local_host: str) -> str:
    """Why our RTP socket (bound to ``local_host``) cannot reach the offer's address: an
    IPv6 c= line to an IPv4 edge or the reverse (answered 488 with Warning 301, RFC 3261
    §20.43); "" when it can. A host name is left to the resolver."""
    try:
        theirs = ipaddress.ip_address(offer.address).version
    except ValueError:
        return ""
    ours = 6 if ":" in local_host else 4
    if theirs != ours:
        return f"media address {offer.address} is IPv{theirs}, this edge's RTP is IPv{ours}"
    return ""


def build_sdp(
    *,
    host: str,
    port: int,
    session_id: int,
    version: int,
    payload_types: list[int],
    dtmf: int | None,
    dtmf_events: str = "0-16",
) -> bytes:
    """Our SDP: an offer lists every codec we take, an answer the one chosen."""
    pts = payload_types + ([dtmf] if dtmf is not None else [])
    family = "IP6" if ":" in host else "IP4"  # RFC 4566 §5.7
    lines = [
        "v=0",
        f"o=hotline {session_id} {version} IN {family} {host}",
        "s=hotline",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
    ]
    lines += [f"a=rtpmap:{pt} {CODECS[pt]}/8000" for pt in payload_types]
    if dtmf is not None:
        lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} {dtmf_events}"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()
