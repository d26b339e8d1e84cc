"""The files of knowledge articles in the browser (hotline/knowledge/attachments.py): the
files part of the edit form, the upload htmx makes as soon as files are chosen, and the
download.

    POST /knowledge/{id}/files           keep the chosen files for the next version (htmx:
                                         the form's files part comes back)
    GET  /knowledge/files/{file_id}      the file (inline=1: an image shown in place)

Without JavaScript the chosen files go with "Save version" (``knowledge_forms.edit``), which
keeps the acceptable ones first: a form refused for a file or a field comes back with
everything typed and every file already accepted. ``web.pages.knowledge`` includes this
router."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from sqlmodel import Session
from starlette.responses import Response

from core.clock import Clock
from hotline.attachments import AttachmentRefused, Limits, Upload, store_for
from hotline.knowledge import attachments, service
from hotline.knowledge.lifecycle import may_write
from hotline.knowledge.models import KnowledgeArticle
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.admin_common import attempt, is_htmx
from web.pages.i18n import _
from web.pages.knowledge_common import ANYONE, POSTED, WRITER, in_words, page_context
from web.pages.people import NotAllowed, Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

Uploads = Annotated[list[UploadFile], File()]
Ids = Annotated[list[int], Form()]


@dataclass
class FileForm:
    """The files part of an edit form: the uploads kept for the next version, the current
    files to remove, and what was refused (in words)."""

    staged: list[int] = field(default_factory=list)
    remove: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def refused_words(exc: AttachmentRefused, limits: Limits) -> str:
    if exc.problem == "too_big":
        return _(
            "%(name)s is larger than %(size)s MB.",
            name=exc.filename,
            size=f"{limits.max_bytes / 1024 / 1024:g}",
        )
    if exc.problem == "empty":
        return _("%(name)s is empty.", name=exc.filename)
    if isinstance(exc, attachments.DuplicateFile):
        return _(
            "%(name)s is already attached as %(existing)s.",
            name=exc.filename,
            existing=exc.existing,
        )
    return _(
        "%(name)s is not a PDF, image, Word, Excel, OpenDocument or text file, or its content "
        "is not what its name says.",
        name=exc.filename,
    )


def take_uploads(
    request: Request,
    session: Session,
    clock: Clock,
    person: Person,
    article: KnowledgeArticle,
    *,
    files: list[UploadFile],
    staged: list[int],
    remove: list[int],
) -> FileForm:
    """Keep the acceptable uploads for the article's next version (audited); the form's
    files part with them added and the others' refusals in words."""
    limits = attachments.limits_of(request.app.state.settings)
    # A form without a chosen file still sends an empty part without a name.
    uploads = [
        Upload(filename=f.filename or "", data=f.file.read(limits.max_bytes + 1))
        for f in files
        if f.filename
    ]
    form = FileForm(staged=list(dict.fromkeys(staged)), remove=list(dict.fromkeys(remove)))
    if not uploads:
        return form
    result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: attachments.stage(
            session,
            store=store_for(request.app.state.settings),
            limits=limits,
            user=person.user,
            article_id=article.id or 0,
            uploads=uploads,
            staged=form.staged,
            removing=form.remove,
            now=clock.now(),
        ),
        action="knowledge.page.upload",
        target=article.number,
        detail={"files": [u.filename[:200] for u in uploads]},
    )
    if result is None:
        assert refused is not None
        form.errors.append(in_words(refused))
        return form
    form.staged += [f.id for f in result.kept if f.id is not None]
    form.errors += [refused_words(exc, limits) for exc in result.refused]
    return form


def files_context(
    request: Request, session: Session, article: KnowledgeArticle, form: FileForm
) -> dict[str, Any]:
    """What the edit form's files part shows: the head version's files, the uploads kept
    for the next one, and how to put each in the answer."""
    assert article.id is not None
    limits = attachments.limits_of(request.app.state.settings)
    return {
        "kb_files": {
            "current": attachments.files_of(
                session, article_id=article.id, version=article.version
            ),
            "staged": attachments.staged_files(session, article_id=article.id, ids=form.staged),
            "remove": set(form.remove),
            "errors": form.errors,
            "accept": ",".join(f".{t}" for t in sorted(attachments.TYPES)),
            "max_mb": f"{limits.max_bytes / 1024 / 1024:g}",
        },
        "images": attachments.IMAGES,
        "snippet": snippet,
    }


def snippet(file: Any) -> str:
    """The Markdown that puts the file in the answer: an image in place, others as a link."""
    name = file.filename.replace("[", "(").replace("]", ")")
    bang = "!" if file.content_type in attachments.IMAGES else ""
    return f"{bang}[{name}](attachment:{file.id})"


@router.post("/knowledge/{article_id}/files", dependencies=POSTED)
def upload(
    request: Request,
    article_id: int,
    session: SessionDep,
    clock: ClockDep,
    person: Person = WRITER,
    files: Uploads = [],  # noqa: B006 (FastAPI copies it)
    staged: Ids = [],  # noqa: B006
    remove: Ids = [],  # noqa: B006
) -> Response:
    article = service.get_article(session, user=person.user, article_id=article_id)
    if not may_write(person.user, article.owner_unit_id):
        raise NotAllowed
    form = take_uploads(
        request, session, clock, person, article, files=files, staged=staged, remove=remove
    )
    context = page_context(request, person, "")
    context.update(article=article, **files_context(request, session, article, form))
    # htmx swaps only a 2xx answer: a refusal is shown in the part it returns.
    status = 200 if is_htmx(request) or not form.errors else 422
    return render(request, "knowledge/form.html", context, block="files", status_code=status)


def content_disposition(kind: str, filename: str) -> str:
    """The header with an ASCII name for old clients and the real one (RFC 6266)."""
    plain = "".join(
        ch if ch.isascii() and ch.isprintable() and ch not in '"\\;' else "_" for ch in filename
    )
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/knowledge/files/{file_id}")
def download(
    file_id: int,
    session: SessionDep,
    settings: SettingsDep,
    person: Person = ANYONE,
    inline: str = "",
) -> Response:
    """The file, to whoever may read a version that carries it; to anyone else, the
    missing page."""
    row, data = attachments.fetch(
        session, store=store_for(settings), user=person.user, file_id=file_id
    )
    kind = "inline" if inline and row.content_type in attachments.IMAGES else "attachment"
    return Response(
        data,
        media_type=row.content_type,
        headers={
            "Content-Disposition": content_disposition(kind, row.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )
