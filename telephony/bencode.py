"""Bencode (BEP 3), the encoding of rtpengine's ng control protocol (``telephony.rtpengine``):
integers, byte strings, lists and dictionaries with sorted keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Bencodable = bytes | str | int | Sequence[Any] | Mapping[str, Any]


class BencodeError(ValueError):
    """A datagram that is not well-formed bencode."""


def bencode(value: Bencodable) -> bytes:
    """Bencode ``value``: str as UTF-8 bytes, bool as 0/1, dict keys sorted (as BEP 3 asks)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    if isinstance(value, bool | int):
        out += b"i%de" % int(value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out += b"%d:" % len(raw) + raw
    elif isinstance(value, Mapping):
        out += b"d"
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        for key, item in items:
            out += b"%d:" % len(key) + key
            _encode(item, out)
        out += b"e"
    elif isinstance(value, Sequence):
        out += b"l"
        for item in value:
            _encode(item, out)
        out += b"e"
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings come back as str (UTF-8, undecodable bytes
    kept as surrogates), so an SDP reads as text."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, at: int) -> tuple[Any, int]:
    if at >= len(data):
        raise BencodeError("truncated")
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise BencodeError("unterminated integer")
        try:
            return int(data[at + 1 : end]), end + 1
        except ValueError as exc:
            raise BencodeError("bad integer") from exc
    if lead in (b"l", b"d"):
        items: list[Any] = []
        at += 1
        while data[at : at + 1] != b"e":
            if at >= len(data):
                raise BencodeError("unterminated list or dict")
            item, at = _decode(data, at)
            items.append(item)
        if lead == b"l":
            return items, at + 1
        if len(items) % 2:
            raise BencodeError("dict with a key and no value")
        return dict(zip(items[::2], items[1::2], strict=True)), at + 1
    colon = data.find(b":", at)
    if colon < 0 or not data[at:colon].isdigit():
        raise BencodeError(f"unexpected byte {lead!r}")
    end = colon + 1 + int(data[at:colon])
    if end > len(data):
        raise BencodeError("truncated string")
    return data[colon + 1 : end].decode("utf-8", "surrogateescape"), end
