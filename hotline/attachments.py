"""The files a unit sends with its reply: checked (size, and a type both by its extension
and by its first bytes), kept in a file store behind a small protocol (a directory under the
data directory here; object storage implements the same three calls), and given back only to
those who may see the ticket — anyone else is told it does not exist."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Protocol

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import User
from core.db import saved_id
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from dispatch import access, handling
from dispatch.assignments import Actor, get_assignment, require_own_unit, who
from dispatch.models import Assignment, Attachment


class FileStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


class DirectoryStore:
    """Files in a directory, two levels deep by key (keys are random hex), written whole or
    not at all (a temporary file renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key[:2] / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def store_for(settings: Settings) -> FileStore:
    return DirectoryStore(settings.web.attachment_dir or settings.data_dir / "attachments")


# ---------------------------------------------------------------- checking an upload

_PDF, _PNG, _JPEG = b"%PDF-", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
_ZIP, _OLE = b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# extension -> (content type, the first bytes a file of that type starts with; None: text)
KINDS: dict[str, tuple[str, bytes | None]] = {
    "pdf": ("application/pdf", _PDF),
    "png": ("image/png", _PNG),
    "jpg": ("image/jpeg", _JPEG),
    "jpeg": ("image/jpeg", _JPEG),
    "doc": ("application/msword", _OLE),
    "xls": ("application/vnd.ms-excel", _OLE),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", _ZIP),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", _ZIP),
    "odt": ("application/vnd.oasis.opendocument.text", _ZIP),
    "txt": ("text/plain; charset=utf-8", None),
}


class AttachmentRefused(InvalidInput):
    """An upload that may not be kept; `problem` says why (empty, too_big, type)."""

    def __init__(self, message: str, *, problem: str, filename: str) -> None:
        super().__init__(message, problem=problem, filename=filename)
        self.problem = problem
        self.filename = filename


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    types: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_bytes=settings.web.attachment_max_bytes,
            types=frozenset(t.lower().lstrip(".") for t in settings.web.attachment_types),
        )


def clean_name(filename: str) -> str:
    """The file's own name, without any folder a browser sent along, at most 200 chars."""
    name = PurePath(filename.replace("\\", "/")).name.strip()
    name = "".join(ch for ch in name if ch.isprintable())
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 199 - len(ext)] + dot + ext if dot and len(ext) < 20 else name[:200]
    return name or "file"


def check(upload: Upload, limits: Limits) -> str:
    """The upload's content type, or AttachmentRefused."""
    name = clean_name(upload.filename)
    if not upload.data:
        raise AttachmentRefused(f"{name} is empty", problem="empty", filename=name)
    if len(upload.data) > limits.max_bytes:
        raise AttachmentRefused(
            f"{name} is larger than {limits.max_bytes} bytes", problem="too_big", filename=name
        )
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    kind = KINDS.get(ext) if ext in limits.types else None
    if kind is None or not _looks_like(upload.data, kind[1]):
        raise AttachmentRefused(
            f"{name} is not one of the allowed types {sorted(limits.types)}",
            problem="type",
            filename=name,
        )
    return kind[0]


def _looks_like(data: bytes, magic: bytes | None) -> bool:
    if magic is not None:
        return data.startswith(magic)
    try:
        return "\x00" not in data.decode("utf-8")
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------- keeping and giving back


def attach(
    session: Session,
    *,
    store: FileStore,
    limits: Limits,
    assignment: Assignment,
    uploads: Sequence[Upload],
    actor: Actor,
    now: datetime,
) -> list[Attachment]:
    """Keep `uploads` on the assignment (all are checked before any is kept)."""
    require_own_unit(actor, assignment)
    types = [check(u, limits) for u in uploads]
    rows = []
    for upload, content_type in zip(uploads, types, strict=True):
        key = secrets.token_hex(20)
        store.put(key, upload.data)
        row = Attachment(
            ticket_id=assignment.ticket_id,
            assignment_id=saved_id(assignment),
            filename=clean_name(upload.filename),
            content_type=content_type,
            size=len(upload.data),
            sha256=hashlib.sha256(upload.data).hexdigest(),
            storage_key=key,
            uploaded_by=who(actor),
            uploaded_at=now,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def reply_with_attachments(
    session: Session,
    *,
    store: FileStore,
    limits: Limits,
    assignment_id: int,
    text: str,
    uploads: Sequence[Upload],
    actor: Actor,
    now: datetime,
) -> tuple[Assignment, list[Attachment]]:
    """回复 with files: every file is checked first, so a refused file leaves no reply."""
    for upload in uploads:
        check(upload, limits)
    assignment = handling.reply(
        session, assignment_id=assignment_id, text=text, actor=actor, now=now
    )
    kept = attach(
        session,
        store=store,
        limits=limits,
        assignment=get_assignment(session, saved_id(assignment)),
        uploads=uploads,
        actor=actor,
        now=now,
    )
    return assignment, kept


def attachments_of(session: Session, *, ticket_id: int) -> list[Attachment]:
    return list(
        session.scalars(
            select(Attachment)
            .where(col(Attachment.ticket_id) == ticket_id)
            .order_by(col(Attachment.uploaded_at), col(Attachment.id))
        )
    )


def fetch(
    session: Session, *, store: FileStore, user: User, attachment_id: int
) -> tuple[Attachment, bytes]:
    """The attachment and its bytes, if `user` may see its ticket; otherwise NotFound, in
    the same words as an attachment that does not exist."""
    row = session.get(Attachment, attachment_id)
    missing = NotFound(f"attachment {attachment_id} does not exist", attachment_id=attachment_id)
    if row is None:
        raise missing
    try:
        access.visible_ticket(session, user=user, ticket_id=row.ticket_id)
    except NotFound:
        raise missing from None
    try:
        return row, store.get(row.storage_key)
    except FileNotFoundError:
        raise missing from None
