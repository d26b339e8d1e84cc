"""A stored row that must be there: the row a foreign key points at, or one an earlier
statement of the same transaction found. SQLModel types `Session.get` as optional; here a
missing row is a bug, not a user error, and raises LookupError."""

from __future__ import annotations

from typing import TypeVar

from sqlmodel import Session, SQLModel

_Model = TypeVar("_Model", bound=SQLModel)


def existing(
    session: Session, model: type[_Model], ident: int, *, populate_existing: bool = False
) -> _Model:
    """`session.get(model, ident)`, for a row the data guarantees exists."""
    row = session.get(model, ident, populate_existing=populate_existing)
    if row is None:
        raise LookupError(f"{model.__name__} {ident} does not exist")
    return row
