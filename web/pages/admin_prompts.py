"""Admin: the voice prompts the phone system plays — listen, and replace one with a WAV.

GET  /admin/prompts               the prompts (setup.prompt_set: synthesised or configured)
GET  /admin/prompts/{name}.wav    one prompt's audio (admins only)
POST /admin/prompts/{name}        replace it with an uploaded WAV (telephony.prompts.convert_wav:
                                  8 kHz 16-bit mono, through sox when needed)
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.responses import Response

from core.errors import NotFound
from hotline.calls import setup
from telephony.prompts import PromptError, PromptSet, convert_wav
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.admin_common import ADMIN, POSTED, done, notice
from web.pages.i18n import _
from web.pages.people import Person, record
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

MAX_UPLOAD = 20 * 1024 * 1024  # a minute of CD-quality stereo is 10 MB

# ---------------------------------------------------------------- voice prompts


def _prompts(settings: Any) -> PromptSet:
    try:
        return setup.prompt_set(settings)
    except PromptError as exc:
        raise NotFound(str(exc)) from exc


def _seconds(path: Path) -> float | None:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (OSError, EOFError, wave.Error):
        return None


def _prompts_page(
    request: Request,
    settings: Any,
    *,
    error: str | None = None,
    failed: str | None = None,
    status: int = 200,
) -> Response:
    prompts = _prompts(settings)
    rows = [
        {
            "name": name,
            "text": text,
            "seconds": _seconds(prompts.path(name)),
            "recorded": name in prompts.overrides,
        }
        for name, text in sorted(prompts.texts.items(), key=lambda item: _is_piece(item[0]))
    ]
    context = {
        "prompts": rows,
        "directory": prompts.directory,
        "language": prompts.language,
        "error": error,
        "failed": failed,
        "notice": notice(request),
    }
    return render(request, "admin/prompts.html", context, status_code=status)


def _is_piece(name: str) -> bool:
    """The whole sentences come first, as the call flows play them (greeting, menu …), then
    the pieces numbers, dates and states are spoken with."""
    return name.startswith(("digit_", "status_", "ten", "year", "month", "day", "hour", "minute"))


@router.get("/admin/prompts")
def prompts_page(request: Request, settings: SettingsDep, person: Person = ADMIN) -> Response:
    return _prompts_page(request, settings)


@router.get("/admin/prompts/{name}.wav")
def prompt_audio(name: str, settings: SettingsDep, person: Person = ADMIN) -> Response:
    prompts = _prompts(settings)
    path = prompts.path(name)
    if name not in prompts.texts or not path.is_file():
        raise NotFound(f"no prompt {name!r}")
    return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})


def _is_wav(head: bytes) -> bool:
    return len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE"


@router.post("/admin/prompts/{name}", dependencies=POSTED)
def replace_prompt(
    name: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = ADMIN,
    audio: Annotated[UploadFile | None, File()] = None,
) -> Response:
    prompts = _prompts(settings)
    if name not in prompts.texts:
        raise NotFound(f"no prompt {name!r}")
    data = audio.file.read(MAX_UPLOAD + 1) if audio is not None else b""
    problem = None
    if not data:
        problem = _("Choose a WAV file to upload.")
    elif len(data) > MAX_UPLOAD:
        problem = _("The file is larger than 20 MB.")
    elif not _is_wav(data[:12]):
        problem = _("This is not a WAV file. Record or export the prompt as WAV.")
    if problem is None:
        prompts.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="prompt-upload-") as tmp:
            source = Path(tmp) / "upload.wav"
            source.write_bytes(data)
            try:
                convert_wav(source, prompts.path(name))
            except PromptError:
                problem = _(
                    "The file could not be read as audio (sox could not convert it to "
                    "8 kHz 16-bit mono)."
                )
    outcome = "refused" if problem else "ok"
    record(
        session,
        request,
        clock,
        action="admin.prompt.replace",
        person=person,
        target=f"prompt:{name}",
        outcome=outcome,
        detail={"bytes": len(data), "file": audio.filename if audio else None},
    )
    if problem:
        return _prompts_page(request, settings, error=problem, failed=name, status=422)
    return done("/admin/prompts", "prompt_replaced")
