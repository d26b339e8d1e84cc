"""The key a call is known by outside the SIP edge (``Call.call_id``): its SIP Call-ID, made
to fit the call record's column and unique per call.

RFC 3261 sets no length on a Call-ID, and a UA may (wrongly) use one again for a later call.
The platform keys every row a call creates on ``call_id`` (``telephony.models.CallRecord``,
255 characters, unique), so a key longer than ``CALL_KEY_MAX`` is replaced by its SHA-256
(never refused: a citizen's call is not turned away for the length of a header their carrier
chose), and a Call-ID seen before in this process gets ``~2``, ``~3``… so a later call is a new
call with a new record and ticket, never folded into the first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

CALL_KEY_MAX = 255
"""The length of ``CallRecord.call_id`` (and of every other column a call key goes into)."""


def fit(key: str) -> str:
    """``key`` itself when it fits the column, else ``sha256:`` and its hex digest."""
    if len(key) <= CALL_KEY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class CallKeys:
    """Hands out a key per new call; remembers the last ``memory`` Call-IDs (as digests)."""

    def __init__(self, memory: int = 100_000) -> None:
        self._memory = memory
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def new_call(self, sip_call_id: str) -> str:
        digest = hashlib.sha256(sip_call_id.encode("utf-8")).digest()
        with self._lock:
            uses = self._seen.pop(digest, 0) + 1
            self._seen[digest] = uses
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        return fit(sip_call_id if uses == 1 else f"{sip_call_id}~{uses}")
