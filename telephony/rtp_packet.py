"""RTP packets on the wire (RFC 3550 §5.1): parsing every length against the datagram, and
building them. pyVoIP's ``RTPMessage`` reads CSRCs past the end of a packet and ignores padding
and extensions; nothing of it is used."""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")  # the fixed 12 bytes (RFC 3550 §5.1)


class MalformedPacket(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RtpPacket:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet (RFC 3550 §5.1), checking every length against the datagram."""
    size = len(data)
    if size < 12:
        raise MalformedPacket(f"{size} bytes is shorter than an RTP header")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise MalformedPacket(f"RTP version {b0 >> 6}")
    offset = 12 + 4 * (b0 & 0x0F)
    if offset > size:
        raise MalformedPacket("CSRC list runs past the end of the packet")
    if b0 & 0x10:
        if offset + 4 > size:
            raise MalformedPacket("extension header runs past the end of the packet")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        if offset > size:
            raise MalformedPacket("extension runs past the end of the packet")
    end = size
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            raise MalformedPacket(f"padding of {padding} bytes does not fit")
        end -= padding
    return RtpPacket(
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=data[offset:end],
    )


def build_rtp(
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    return (
        HEADER.pack(
            0x80,
            (0x80 if marker else 0) | payload_type,
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )
