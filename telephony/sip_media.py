"""A SIP call's media as the edge sees it: the ``Media`` a call speaks through (an
``RtpSession``), and ``EndedMedia``, what an ended call reads: the audio received and not yet
read, then the end. Apart from ``telephony.sip_dialogs`` so that the dialog layer stays one
responsibility."""

from __future__ import annotations

from typing import Protocol


class Media(Protocol):
    """What the edge needs of a call's RTP (``telephony.rtp_session.RtpSession``)."""

    @property
    def stats(self) -> dict[str, int]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def set_remote(self, addr: tuple[str, int]) -> None: ...
    def read_frame(self, timeout: float) -> bytes | None: ...
    def send_audio(self, pcm16: bytes) -> None: ...
    def wait_sent(self, timeout: float | None = None) -> bool: ...
    def clear_audio(self) -> None: ...
    def send_dtmf(self, key: str) -> bool: ...
    @property
    def queued_ms(self) -> int: ...


class EndedMedia:
    """What a call reads after it ended: what was received and not read yet, then None."""

    def __init__(self, media: Media) -> None:
        self.stats = media.stats
        self._media = media

    def read_frame(self, timeout: float) -> bytes | None:
        frame = self._media.read_frame(0)
        return frame or None

    def read_frames(self, timeout: float, max_frames: int) -> bytes | None:
        reader = getattr(self._media, "read_frames", None)
        frames = self._media.read_frame(0) if reader is None else reader(0, max_frames)
        return frames or None

    def send_audio(self, pcm: bytes) -> None:
        pass

    def wait_sent(self, timeout: float | None = None) -> bool:
        return False

    def clear_audio(self) -> None:
        pass

    def send_dtmf(self, key: str) -> bool:
        return False

    @property
    def queued_ms(self) -> int:
        return 0

    def set_remote(self, addr: tuple[str, int]) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
