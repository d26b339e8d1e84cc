"""Domain errors. They carry no HTTP codes: web/errors.py maps them to responses."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request clashes with the current state (duplicate, stale, already done)."""

    code = "conflict"


class InvalidInput(DomainError):
    """Well-formed but semantically wrong input: a bad rule, an unknown unit code."""

    code = "invalid"


class Forbidden(DomainError):
    code = "forbidden"


class IllegalTransition(Conflict):
    code = "illegal_transition"
