"""The media timeout of a bridged call: a leg whose phone sent no RTP for ``timeout_s``.

A caller who vanishes without a BYE (a dropped mobile, a crashed softphone, a NAT binding
that died) would otherwise keep the bridged call — and the operator, on call — up until the
edge stops. Every leg of a bridge is watched for signs of life: any RTP packet from its
phone (audio, keys, comfort noise), counted by the leg's ``RtpSession``
(``packets_in``) on the edge's own relay, or by rtpengine's tap of that party when the call
is relayed (``telephony.media_relay``; the edge then receives only the taps). A leg whose
count has not moved for ``timeout_s`` has timed out, and the bridge hangs both legs up with a
BYE (``Bridge._time_out``). On rtpengine the bridge first asks rtpengine (``query``) whether
it still hears the phone: a tap whose copies stopped reaching the edge (a firewall) must not
cost a talking caller the call.

A leg whose phone said it would not send (its last offer ``recvonly`` or ``inactive``, or
``sendonly`` — a phone holding the call sends nothing on many models) is exempt while it
says so: the clock starts again when it comes back.
"""

from __future__ import annotations

from telephony.endpoint import Disposition

# How a call ended by the media timeout is recorded: a disposition of its own (both legs;
# ``SipCall.media_timed_out`` says so too), not ``failed``, which is the edge's own failure.
MEDIA_TIMEOUT = Disposition.MEDIA_TIMEOUT

_SENDING = "sendrecv"


def expects_media(leg: object) -> bool:
    """Whether the leg's phone should be sending now (its last offer's direction)."""
    return getattr(leg, "remote_direction", _SENDING) == _SENDING


class MediaWatch:
    """When each watched source (a leg, a tap) last showed a sign of life: ``quiet`` is given
    its packet count at each look and says whether it has been still for ``timeout_s``.
    ``timeout_s`` 0 watches nothing. Not thread-safe per key: each key is looked at by one
    thread (a bridge's relay of that side)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._seen: dict[object, tuple[int, float]] = {}  # key → (count, since)

    def quiet(self, key: object, count: int | None, now: float, *, expected: bool = True) -> bool:
        """True when ``key``'s ``count`` has not changed for ``timeout_s`` while it was
        ``expected`` to send. A new key, a count that moved, or a source not expected to send
        starts the clock again; a ``count`` of None (nothing to watch) is never quiet."""
        if not self.timeout_s or count is None:
            return False
        seen = self._seen.get(key)
        if seen is None or seen[0] != count or not expected:
            self._seen[key] = (count, now)
            return False
        return now - seen[1] >= self.timeout_s

    def silent_for(self, key: object, now: float) -> float:
        seen = self._seen.get(key)
        return 0.0 if seen is None else now - seen[1]

    def forget(self, key: object) -> None:
        self._seen.pop(key, None)
