"""Voice prompts: generated with espeak-ng at setup, stored as 8 kHz 16-bit mono WAV.

A prompt is regenerated only when its file is missing or its text, voice or the generator
changed (a hash per prompt in ``manifest.json``), so a restart doesn't re-synthesise and a
text edit does. A recorded WAV may replace any prompt (a centre will want a real voice for the
greeting); it is converted with sox when it isn't already 8 kHz 16-bit mono, and refused with
a clear error when sox can't read it either.

Numbers and dates are spoken by concatenating pieces (digits, "ten", "year", …): Mandarin and
Korean (Sino-Korean numerals) compose 1–99 the same way, 二十七 / 이십칠.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from telephony.endpoint import SAMPLE_RATE

log = logging.getLogger(__name__)

# Part of every prompt's hash: bump it when the espeak/sox pipeline below changes.
GENERATOR = "espeak-ng+sox/1"
_TRIM_AND_LEVEL = [
    "silence",
    "1",
    "0.02",
    "-45d",
    "reverse",
    "silence",
    "1",
    "0.02",
    "-45d",
    "reverse",
    "pad",
    "0.03",
    "0.08",
    "norm",
    "-3",
]

STATUSES = (
    "intake",
    "pending_dispatch",
    "dispatched",
    "signed",
    "in_progress",
    "replied",
    "reviewed",
    "returned",
    "reopened",
    "merged",
    "closed",
    "archived",
)

# 12345 is read digit by digit, with 幺 for 1 as phone numbers are in Mandarin.
ZH_TEXTS: dict[str, str] = {
    "greeting": "您好，这里是幺二三四五政务服务便民热线，请在提示音后说出您的诉求",
    "welcome": "您好，这里是幺二三四五政务服务便民热线",
    "menu": "反映问题请按1，查询办理进度请按2，留下回拨号码请按3",
    "speak_now": "请在提示音后说出您的诉求",
    "closing": "感谢您的来电，您的诉求已记录，我们会尽快办理，再见",
    "maintenance": "系统维护，请稍后再拨，我们会给您回电",
    "no_speech": "没有听到您的声音，请稍后再拨，再见",
    "enter_ticket": "请输入工单号，以井号键结束",
    "ticket": "工单号",
    "status_is": "当前状态",
    "deadline": "办理时限",
    "not_found": "没有找到该工单",
    "no_input": "没有收到您的输入",
    "goodbye": "感谢您的来电，再见",
    "enter_callback": "请输入您的回拨号码，以井号键结束",
    "callback_is": "您的回拨号码是",
    "callback_recorded": "我们会尽快给您回电，再见",
    "survey_question": (
        "您好，这里是幺二三四五热线回访。您对诉求的办理结果，满意请按1，基本满意请按2，不满意请按3"
    ),
    "invalid_key": "输入有误",
    "thanks": "感谢您的评价，再见",
    "ten": "十",
    "year": "年",
    "month": "月",
    "day": "日",
    "hour": "点",
    "minute": "分",
    **{f"digit_{d}": t for d, t in enumerate("零一二三四五六七八九")},
    "status_intake": "已受理",
    "status_pending_dispatch": "等待派单",
    "status_dispatched": "已派单",
    "status_signed": "已签收",
    "status_in_progress": "正在办理",
    "status_replied": "已答复",
    "status_reviewed": "已审核，等待回访",
    "status_returned": "退单审核中",
    "status_reopened": "重新办理",
    "status_merged": "已合并办理",
    "status_closed": "已办结",
    "status_archived": "已办结归档",
    # The queue (telephony.queue_flow): "您现在排在第 3 位，预计等待 4 分钟".
    "queue_hold": "话务员正忙，请稍候，我们将尽快为您接通",
    "queue_position": "您现在排在第",
    "queue_position_end": "位",
    "queue_wait": "预计等待",
    "queue_wait_end": "分钟",
    "count_2": "两",  # 两分钟, not 二分钟: 2 counting things
    "queue_wait_short": "预计等待不到一分钟",
    "queue_callback_offer": "如需我们给您回电，请按",
    "queue_overflow": "话务员正忙，请在提示音后说出您的诉求，我们会尽快办理",
    "queue_callback_recorded": "已为您登记回电，话务员会尽快给您回电，再见",
}

KO_TEXTS: dict[str, str] = {
    "greeting": "안녕하세요, 12345 민원 콜센터입니다. 신호음 후에 용건을 말씀해 주세요",
    "welcome": "안녕하세요, 12345 민원 콜센터입니다",
    "menu": "민원 접수는 1번, 처리 상황 조회는 2번, 회신 번호를 남기시려면 3번을 눌러 주세요",
    "speak_now": "신호음 후에 용건을 말씀해 주세요",
    "closing": "전화해 주셔서 감사합니다. 민원이 접수되었습니다. 안녕히 계세요",
    "maintenance": "시스템 점검 중입니다. 잠시 후 다시 걸어 주세요. 저희가 다시 전화드리겠습니다",
    "no_speech": "말씀이 들리지 않습니다. 잠시 후 다시 걸어 주세요",
    "enter_ticket": "접수 번호를 누르시고 우물 정자를 눌러 주세요",
    "ticket": "접수 번호",
    "status_is": "현재 상태",
    "deadline": "처리 기한",
    "not_found": "해당 접수 번호를 찾을 수 없습니다",
    "no_input": "입력이 없습니다",
    "goodbye": "전화해 주셔서 감사합니다. 안녕히 계세요",
    "enter_callback": "회신 받으실 번호를 누르시고 우물 정자를 눌러 주세요",
    "callback_is": "회신 번호는",
    "callback_recorded": "곧 연락 드리겠습니다. 안녕히 계세요",
    "survey_question": (
        "12345 민원 콜센터 만족도 조사입니다. "
        "만족하시면 1번, 보통이면 2번, 불만족이면 3번을 눌러 주세요"
    ),
    "invalid_key": "잘못 누르셨습니다",
    "thanks": "응답해 주셔서 감사합니다. 안녕히 계세요",
    "ten": "십",
    "year": "년",
    "month": "월",
    "day": "일",
    "hour": "시",
    "minute": "분",
    **{
        f"digit_{d}": t
        for d, t in enumerate(["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"])
    },
    "status_intake": "접수 완료",
    "status_pending_dispatch": "배정 대기",
    "status_dispatched": "담당 부서 배정",
    "status_signed": "담당 부서 확인",
    "status_in_progress": "처리 중",
    "status_replied": "답변 완료",
    "status_reviewed": "답변 검토 완료",
    "status_returned": "재배정 검토 중",
    "status_reopened": "재처리 중",
    "status_merged": "병합 처리",
    "status_closed": "처리 완료",
    "status_archived": "처리 완료",
    # The queue: "고객님의 대기 순서는 3번입니다. 예상 대기 시간은 4분입니다".
    "queue_hold": "지금은 상담원이 모두 통화 중입니다. 잠시만 기다려 주세요",
    "queue_position": "고객님의 대기 순서는",
    "queue_position_end": "번입니다",
    "queue_wait": "예상 대기 시간은",
    "queue_wait_end": "분입니다",
    "count_2": "이",
    "queue_wait_short": "예상 대기 시간은 1분 미만입니다",
    "queue_callback_offer": "상담원의 전화를 원하시면 다음 번호를 눌러 주세요",
    "queue_overflow": "상담원이 모두 통화 중입니다. 신호음 후에 용건을 말씀해 주세요",
    "queue_callback_recorded": "회신 전화가 접수되었습니다. 곧 연락 드리겠습니다. 안녕히 계세요",
}


@dataclass(frozen=True)
class Language:
    voice: str  # espeak-ng voice
    texts: Mapping[str, str]
    words_per_minute: int = 175  # espeak-ng's default


LANGUAGES: dict[str, Language] = {
    # Production: Mandarin. cmn at the default pace makes the greeting 10.7 s of the
    # caller's time; 200 wpm makes it 9.3 s and stays clear.
    "zh": Language(voice="cmn", texts=ZH_TEXTS, words_per_minute=200),
    "ko": Language(voice="ko", texts=KO_TEXTS),  # the test language (the ASR model is Korean)
}

# Not synthesised: the tone callers are told to speak after.
BEEP = "beep"
# Not synthesised either: what a waiting or held caller hears between announcements.
HOLD = "hold"


class PromptError(Exception):
    pass


def _beep() -> bytes:
    t = np.arange(int(SAMPLE_RATE * 0.35)) / SAMPLE_RATE
    ramp = np.minimum(1, np.minimum(t, t[::-1]) / 0.01)  # no clicks at the edges
    return (8000 * ramp * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()


def hold_music(seconds: float = 8.0) -> bytes:
    """A quiet arpeggio, soft enough under the announcements and never silent: a caller
    hearing silence thinks the line dropped and hangs up (an abandon the centre caused)."""
    notes = [523.25, 659.25, 783.99, 659.25]  # C5 E5 G5 E5
    note_s = 0.5
    t = np.arange(int(SAMPLE_RATE * note_s)) / SAMPLE_RATE
    envelope = np.minimum(1, t / 0.02) * np.exp(-3 * t)
    out = []
    for i in range(int(seconds / note_s)):
        f = notes[i % len(notes)]
        out.append(2500 * envelope * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)))
    return np.concatenate(out).astype("<i2").tobytes()


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise PromptError(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _is_telephone_wav(path: Path) -> bool:
    with wave.open(str(path), "rb") as w:
        return (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)


def convert_wav(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` as 8 kHz 16-bit mono, converting with sox when needed;
    PromptError when it isn't audio sox can read, or is empty."""
    source = Path(source)
    if not source.is_file():
        raise PromptError(f"prompt file {source} does not exist")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp.wav")
    try:
        try:
            telephone_ready = _is_telephone_wav(source)
        except (wave.Error, EOFError, OSError):
            telephone_ready = False
        if telephone_ready:
            shutil.copyfile(source, tmp)
        else:
            try:
                _run(
                    [
                        "sox",
                        str(source),
                        "-r",
                        str(SAMPLE_RATE),
                        "-c",
                        "1",
                        "-b",
                        "16",
                        "-e",
                        "signed-integer",
                        str(tmp),
                    ]
                )
            except PromptError as exc:
                raise PromptError(
                    f"prompt file {source} is not audio that can be converted to 8 kHz "
                    f"16-bit mono WAV: {exc}"
                ) from exc
        with wave.open(str(tmp), "rb") as w:
            if w.getnframes() == 0:
                raise PromptError(f"prompt file {source} holds no audio")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _hash(*parts: str) -> str:
    return hashlib.sha256("\n".join((GENERATOR, *parts)).encode()).hexdigest()


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PromptSet:
    """The prompts of one language in ``directory/<language>/``; ``ensure()`` once at setup,
    then ``pcm(name)`` (cached) during calls."""

    def __init__(
        self,
        directory: Path,
        *,
        language: str = "zh",
        overrides: Mapping[str, Path] | None = None,
        texts: Mapping[str, str] | None = None,
        voice: str | None = None,
    ) -> None:
        if language not in LANGUAGES and (texts is None or voice is None):
            raise PromptError(
                f"no prompt texts for language {language!r}; known: {', '.join(LANGUAGES)}"
            )
        base = LANGUAGES.get(language)
        if not voice:
            if base is None:  # only an empty voice gets here: None was refused above
                raise PromptError(f"no voice for language {language!r}")
            voice = base.voice
        self.language = language
        self.voice = voice
        self.words_per_minute = base.words_per_minute if base else 175
        self.texts: dict[str, str] = {**(base.texts if base else {}), **(texts or {})}
        self.overrides = {name: Path(p) for name, p in (overrides or {}).items()}
        unknown = set(self.overrides) - set(self.texts)
        if unknown:
            raise PromptError(f"overrides for unknown prompts: {', '.join(sorted(unknown))}")
        self.directory = Path(directory) / language
        self._cache: dict[str, bytes] = {BEEP: _beep(), HOLD: hold_music()}
        self._lock = threading.Lock()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.texts) | {BEEP, HOLD}

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.wav"

    def ensure(self, names: Iterable[str] | None = None) -> list[str]:
        """Generate (or convert) every prompt (or those in ``names``) that is missing or out
        of date; returns their names. PromptError on a broken override or a failing
        espeak-ng/sox."""
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest_path = self.directory / "manifest.json"
        try:
            manifest: dict[str, str] = json.loads(manifest_path.read_text())
        except (FileNotFoundError, ValueError):
            manifest = {}
        made: list[str] = []
        wanted = set(self.texts) if names is None else set(names)
        # Recorded overrides first: a broken file is refused before minutes of synthesis.
        order = sorted(wanted & set(self.texts), key=lambda n: (n not in self.overrides, n))
        for name in order:
            text = self.texts[name]
            override = self.overrides.get(name)
            if override is not None:
                if not override.is_file():
                    raise PromptError(f"prompt file {override} for {name!r} does not exist")
                digest = _hash("file", _file_hash(override))
            else:
                digest = _hash(self.voice, str(self.words_per_minute), text)
            if manifest.get(name) == digest and self.path(name).is_file():
                continue
            if override is not None:
                convert_wav(override, self.path(name))
            else:
                self._synthesise(text, self.path(name))
            manifest[name] = digest
            made.append(name)
            self._cache.pop(name, None)
        if made:
            tmp = manifest_path.with_name(f".manifest.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False))
            os.replace(tmp, manifest_path)
            log.info("prompts generated in %s: %s", self.directory, ", ".join(made))
        return made

    def _synthesise(self, text: str, target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="prompt-") as tmp:
            raw = Path(tmp) / "raw.wav"
            out = Path(tmp) / "out.wav"
            _run(
                [
                    "espeak-ng",
                    "-v",
                    self.voice,
                    "-s",
                    str(self.words_per_minute),
                    "-w",
                    str(raw),
                    "--",
                    text,
                ]
            )
            _run(
                [
                    "sox",
                    str(raw),
                    "-r",
                    str(SAMPLE_RATE),
                    "-c",
                    "1",
                    "-b",
                    "16",
                    "-e",
                    "signed-integer",
                    str(out),
                    *_TRIM_AND_LEVEL,
                ]
            )
            os.replace(out, target)

    def pcm(self, name: str) -> bytes:
        """The prompt as PCM16 LE 8 kHz mono."""
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None:
            return cached
        if name not in self.texts:
            raise PromptError(f"no prompt named {name!r}")
        try:
            with wave.open(str(self.path(name)), "rb") as w:
                data = w.readframes(w.getnframes())
        except FileNotFoundError:
            raise PromptError(
                f"prompt {name!r} missing in {self.directory}; run PromptSet.ensure() at setup"
            ) from None
        with self._lock:
            self._cache[name] = data
        return data

    def compose(self, pieces: list[str]) -> bytes:
        return b"".join(self.pcm(p) for p in pieces)


# ---------------------------------------------------------------- spoken numbers and dates
def digit_pieces(digits: str) -> list[str]:
    """One piece per digit: ticket and phone numbers are read digit by digit."""
    return [f"digit_{d}" for d in digits if d.isdigit()]


def number_pieces(n: int) -> list[str]:
    """0–99 as words ("二十七"); larger numbers digit by digit."""
    if n < 0:
        raise ValueError("negative numbers are not spoken")
    if n < 10:
        return [f"digit_{n}"]
    if n >= 100:
        return digit_pieces(str(n))
    tens, units = divmod(n, 10)
    out = ([] if tens == 1 else [f"digit_{tens}"]) + ["ten"]
    return out + ([f"digit_{units}"] if units else [])


def date_pieces(moment: datetime, tz: ZoneInfo) -> list[str]:
    """A deadline as the caller's local date, and the time of day unless it is midnight:
    "2026年12月4日17点30分"."""
    local = moment.astimezone(tz)
    out = digit_pieces(str(local.year)) + ["year"]
    out += number_pieces(local.month) + ["month"] + number_pieces(local.day) + ["day"]
    if (local.hour, local.minute) != (0, 0):
        out += number_pieces(local.hour) + ["hour"]
        if local.minute:
            out += number_pieces(local.minute) + ["minute"]
    return out
