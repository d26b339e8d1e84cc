"""Files attached to knowledge articles: the policy documents, forms and maps a centre's
operators open while answering. They are checked as the files a unit sends with its reply are
(hotline.attachments: size, type by extension and by first bytes) and more closely — an
office file must hold the part its type names, so a spreadsheet renamed .docx is refused —
and kept in the same file store.

A file belongs to a range of an article's versions (`KnowledgeFile.added_in` up to
`removed_in`): a new version carries the files of the one before unless the editor removes
them, and an old version still shows the files it had. An upload is kept at once, before any
version is saved ("staged": the edit form holds its id), so a refused form loses no file
already accepted; saving the version adds the staged files and removes the chosen ones.

Who may download follows the article's rules (hotline/knowledge/lifecycle.py via
service.article_history): a file of a version someone may read, and a staged file only to
the article's writers; anyone else is told it does not exist."""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import User
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from hotline.attachments import AttachmentRefused, FileStore, Limits, Upload, clean_name
from hotline.attachments import check as check_kind
from hotline.knowledge import service
from hotline.knowledge.lifecycle import Action, check_write, may_write, next_status
from hotline.knowledge.models import KnowledgeArticle, KnowledgeArticleUpdate, KnowledgeFile

# PDF, images, office documents (Word, Excel, OpenDocument text) and plain text.
TYPES = frozenset({"pdf", "png", "jpg", "jpeg", "doc", "docx", "xls", "xlsx", "odt", "txt"})
IMAGES = frozenset({"image/png", "image/jpeg"})
CHANGE = "attachments"  # the name a version's `changed` gives its files

# What the ZIP of each office type must hold (a part, or the `mimetype` entry's text).
_ZIP_PARTS = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (
        "word/document.xml",
        None,
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("xl/workbook.xml", None),
    "application/vnd.oasis.opendocument.text": (
        "mimetype",
        b"application/vnd.oasis.opendocument.text",
    ),
}


def limits_of(settings: Settings) -> Limits:
    """The size cap replies have (``HOTLINE_WEB__ATTACHMENT_MAX_BYTES``), the types above."""
    return Limits(max_bytes=settings.web.attachment_max_bytes, types=TYPES)


class DuplicateFile(AttachmentRefused):
    """The same bytes are attached already (under `existing`)."""

    def __init__(self, filename: str, existing: str) -> None:
        super().__init__(
            f"{filename} is already attached as {existing}", problem="duplicate", filename=filename
        )
        self.existing = existing


def check(upload: Upload, limits: Limits) -> str:
    """The upload's content type, or AttachmentRefused (empty, too_big, type)."""
    content_type = check_kind(upload, limits)
    expected = _ZIP_PARTS.get(content_type)
    if expected is not None and not _zip_holds(upload.data, *expected):
        name = clean_name(upload.filename)
        raise AttachmentRefused(
            f"{name} does not hold what its type says", problem="type", filename=name
        )
    return content_type


def _zip_holds(data: bytes, part: str, text: bytes | None) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if text is None:
                return part in archive.namelist()
            return archive.read(part).strip() == text
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return False


# ---------------------------------------------------------------- reading


def files_of(session: Session, *, article_id: int, version: int) -> list[KnowledgeFile]:
    """The files `version` carries, in the order they were uploaded."""
    return [f for f in saved_files(session, article_id=article_id) if f.in_version(version)]


def saved_files(session: Session, *, article_id: int) -> list[KnowledgeFile]:
    """Every file any version of the article carried (what the history compares)."""
    return list(
        session.scalars(
            select(KnowledgeFile)
            .where(
                col(KnowledgeFile.article_id) == article_id,
                col(KnowledgeFile.added_in).is_not(None),
            )
            .order_by(col(KnowledgeFile.uploaded_at), col(KnowledgeFile.id))
        )
    )


def staged_files(session: Session, *, article_id: int, ids: Collection[int]) -> list[KnowledgeFile]:
    """Of `ids`, the files uploaded for the article and not yet saved with a version."""
    if not ids:
        return []
    return list(
        session.scalars(
            select(KnowledgeFile)
            .where(
                col(KnowledgeFile.article_id) == article_id,
                col(KnowledgeFile.added_in).is_(None),
                col(KnowledgeFile.id).in_(list(ids)),
            )
            .order_by(col(KnowledgeFile.id))
        )
    )


@dataclass(frozen=True)
class VersionFiles:
    """What one version changed in the files: their names, as added and as removed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def changes_by_version(files: Sequence[KnowledgeFile]) -> dict[int, VersionFiles]:
    """From `saved_files`: for each version that changed the files, what it changed."""
    found: dict[int, VersionFiles] = {}
    for f in files:
        if f.added_in is not None:
            found.setdefault(f.added_in, VersionFiles()).added.append(f.filename)
        if f.removed_in is not None:
            found.setdefault(f.removed_in, VersionFiles()).removed.append(f.filename)
    return found


# ---------------------------------------------------------------- uploading and saving


@dataclass
class Staged:
    """The outcome of an upload: the files kept, and why the others were refused."""

    kept: list[KnowledgeFile]
    refused: list[AttachmentRefused]


def stage(
    session: Session,
    *,
    store: FileStore,
    limits: Limits,
    user: User,
    article_id: int,
    uploads: Sequence[Upload],
    staged: Collection[int] = (),
    removing: Collection[int] = (),
    now: datetime,
) -> Staged:
    """Keep every acceptable upload for the article's next version; each refused one says
    why. The same bytes as a file the next version will carry (the head's files not being
    removed, and those already staged) are refused as a duplicate."""
    article = service.get_article(session, user=user, article_id=article_id)
    check_write(user, article.owner_unit_id)
    next_status(Action.edit, article.status)  # none may be added to an article in review
    carried = [
        f
        for f in files_of(session, article_id=article_id, version=article.version)
        if f.id not in removing
    ]
    present = {
        f.sha256: f.filename
        for f in [*carried, *staged_files(session, article_id=article_id, ids=staged)]
    }
    result = Staged(kept=[], refused=[])
    for upload in uploads:
        name = clean_name(upload.filename)
        try:
            content_type = check(upload, limits)
            digest = hashlib.sha256(upload.data).hexdigest()
            if digest in present:
                raise DuplicateFile(name, present[digest])
        except AttachmentRefused as refused:
            result.refused.append(refused)
            continue
        key = secrets.token_hex(20)
        store.put(key, upload.data)
        row = KnowledgeFile.model_validate(
            {
                "article_id": article_id,
                "filename": name,
                "content_type": content_type,
                "size": len(upload.data),
                "sha256": digest,
                "storage_key": key,
                "uploaded_by": _id(user),
                "uploaded_at": now,
            }
        )
        session.add(row)
        present[digest] = name
        result.kept.append(row)
    session.flush()
    return result


def save_version(
    session: Session,
    *,
    user: User,
    article_id: int,
    expected_version: int,
    changes: KnowledgeArticleUpdate,
    now: datetime,
    note: str | None = None,
    add: Collection[int] = (),
    remove: Collection[int] = (),
) -> KnowledgeArticle:
    """A new version (service.edit_article) that also adds the staged files `add` and drops
    the files `remove` of the version it starts from; files alone changing is a change."""
    adding = staged_files(session, article_id=article_id, ids=add)
    if len(adding) != len(set(add)):
        raise InvalidInput("an uploaded file is no longer there: upload it again", problem="gone")
    removing = [
        f
        for f in files_of(session, article_id=article_id, version=expected_version)
        if f.id in remove
    ]
    article = service.edit_article(
        session,
        user=user,
        article_id=article_id,
        expected_version=expected_version,
        changes=changes,
        now=now,
        note=note,
        also_changed=[CHANGE] if adding or removing else [],
    )
    for f in adding:
        f.added_in = article.version
    for f in removing:
        f.removed_in = article.version
    session.flush()
    return article


def purge_unsaved(session: Session, *, store: FileStore, before: datetime) -> int:
    """Forget the uploads no version took (an edit form left without saving) made before
    `before`, their bytes too; how many."""
    rows = list(
        session.scalars(
            select(KnowledgeFile).where(
                col(KnowledgeFile.added_in).is_(None), col(KnowledgeFile.uploaded_at) < before
            )
        )
    )
    for row in rows:
        session.delete(row)
    session.flush()
    for row in rows:
        store.delete(row.storage_key)
    return len(rows)


# ---------------------------------------------------------------- downloading


def fetch(
    session: Session, *, store: FileStore, user: User, file_id: int
) -> tuple[KnowledgeFile, bytes]:
    """The file and its bytes, if `user` may read a version that carries it (a staged one:
    if `user` may write the article); otherwise NotFound, as for a file that does not exist."""
    missing = NotFound(f"knowledge file {file_id} does not exist", file_id=file_id)
    row = session.get(KnowledgeFile, file_id)
    if row is None:
        raise missing
    try:
        versions = service.article_history(session, user=user, article_id=row.article_id)
    except NotFound:
        raise missing from None
    if row.added_in is None:
        article = session.get(KnowledgeArticle, row.article_id)
        readable = article is not None and may_write(user, article.owner_unit_id)
    else:
        readable = any(row.in_version(v.version) for v in versions)
    if not readable:
        raise missing
    try:
        return row, store.get(row.storage_key)
    except FileNotFoundError:
        raise missing from None


def _id(user: User) -> int:
    if user.id is None:
        raise ValueError("the user has not been saved")
    return user.id
