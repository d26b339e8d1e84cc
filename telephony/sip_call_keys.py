"""The key a call is known by outside the SIP edge (``Call.call_id``): its SIP Call-ID, made
to fit the call record's column and unique per call.

RFC 3261 sets no length on a Call-ID, and a UA may (wrongly) use one again for a later call.
The platform keys every row a call creates on ``call_id`` (``telephony.models.CallRecord``,
255 characters, unique), so a key longer than ``CALL_KEY_MAX`` is replaced by its SHA-256
(never refused: a citizen's call is not turned away for the length of a header their carrier
chose), and a Call-ID seen before gets ``~2``, ``~3``… so a later call is a new call with a
new record and ticket, never folded into the first. "Seen before" is this process's memory and,
for a Call-ID this process has not met, the ``known`` check the application gives (a key a
call record already holds: a call taken by an earlier run of the edge, or by another edge).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)

CALL_KEY_MAX = 255
"""The length of ``CallRecord.call_id`` (and of every other column a call key goes into)."""
KNOWN_TRIES = 1000
"""How many suffixes a Call-ID met before may try against ``known`` before the key takes a
random suffix (a UA that reused one Call-ID a thousand times)."""


def fit(key: str) -> str:
    """``key`` itself when it fits the column, else ``sha256:`` and its hex digest."""
    if len(key) <= CALL_KEY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class CallKeys:
    """Hands out a key per new call; remembers the last ``memory`` Call-IDs (as digests)."""

    def __init__(
        self, memory: int = 100_000, *, known: Callable[[str], bool] | None = None
    ) -> None:
        self._memory = memory
        self._known = known
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def new_call(self, sip_call_id: str) -> str:
        digest = hashlib.sha256(sip_call_id.encode("utf-8")).digest()
        with self._lock:
            uses = self._seen.pop(digest, 0) + 1
            self._seen[digest] = uses
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        key = _key(sip_call_id, uses)
        if uses == 1 and self._known is not None:
            key, uses = self._first_unknown(sip_call_id)
            with self._lock:
                self._seen[digest] = max(uses, self._seen.get(digest, 0))
        return key

    def _first_unknown(self, sip_call_id: str) -> tuple[str, int]:
        """The first of ``sip_call_id``, ``~2``, ``~3``… that no call record holds. A failing
        check (the database away) is logged and the key used as this process sees it: the
        call is answered; its record then merges with the earlier one, as before this check."""
        assert self._known is not None
        for uses in range(1, KNOWN_TRIES + 1):
            key = _key(sip_call_id, uses)
            try:
                if not self._known(key):
                    return key, uses
            except Exception as exc:  # a call is never refused for this
                log.warning("cannot check whether call key %r was used before: %s", key, exc)
                return key, uses
        return _key(f"{sip_call_id}~{secrets.token_hex(4)}", 1), KNOWN_TRIES


def _key(sip_call_id: str, uses: int) -> str:
    return fit(sip_call_id if uses == 1 else f"{sip_call_id}~{uses}")
