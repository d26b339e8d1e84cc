"""The photos a citizen sent with a web request, as the ticket shows them.

The public site (hotline.public) keeps them in one of two ways: on the lead unit's assignment
as `Attachment` rows when the rules dispatched the request at once, or — a request waiting
for a dispatcher has no assignment yet — in the file store, listed on the ticket's
``citizen_photos`` note (storage key, name, type, size, sha256). Either way the note lists
them, and this module reads that list for the ticket page: the dispatcher deciding where the
request goes sees the photos before any unit has it, and every unit it goes to later sees
them too. Whoever may see the ticket may see its photos; to anyone else a photo does not
exist, in the same words as one that really does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import User
from core.errors import NotFound
from dispatch import access
from hotline.attachments import FileStore
from tickets.lifecycle import Action
from tickets.models import TicketEvent

NOTE_KIND = "citizen_photos"


@dataclass(frozen=True)
class CitizenPhoto:
    index: int  # its place among the ticket's citizen photos, from 0: the address of its bytes
    filename: str
    size: int
    content_type: str | None
    attachment_id: int | None  # kept as a unit's attachment: served at /attachments/<id>
    storage_key: str | None  # kept before dispatch: in the file store only


def photos_of(session: Session, *, ticket_id: int) -> list[CitizenPhoto]:
    """The citizen's photos of a ticket, in the order sent (no access check: the caller
    shows them on a page already checked)."""
    notes = session.scalars(
        select(TicketEvent)
        .where(
            col(TicketEvent.ticket_id) == ticket_id, col(TicketEvent.action) == Action.note.value
        )
        .order_by(col(TicketEvent.seq))
    )
    found: list[CitizenPhoto] = []
    for note in notes:
        if (note.data or {}).get("kind") != NOTE_KIND:
            continue
        for item in note.data.get("photos") or []:
            if not isinstance(item, dict):
                continue
            found.append(
                CitizenPhoto(
                    index=len(found),
                    filename=str(item.get("filename") or "photo"),
                    size=int(item.get("size") or 0),
                    content_type=item.get("content_type"),
                    attachment_id=item.get("attachment_id"),
                    storage_key=item.get("storage_key"),
                )
            )
    return found


def fetch(
    session: Session, *, store: FileStore, user: User, ticket_id: int, index: int
) -> tuple[CitizenPhoto, bytes]:
    """A photo kept before dispatch and its bytes, if `user` may see the ticket; otherwise
    NotFound in the same words as a photo that does not exist."""
    missing = NotFound(f"photo {index} of ticket {ticket_id} does not exist", ticket_id=ticket_id)
    try:
        access.visible_ticket(session, user=user, ticket_id=ticket_id)
    except NotFound:
        raise missing from None
    photos = photos_of(session, ticket_id=ticket_id)
    if not 0 <= index < len(photos) or photos[index].storage_key is None:
        raise missing
    photo = photos[index]
    try:
        return photo, store.get(str(photo.storage_key))
    except FileNotFoundError:
        raise missing from None
