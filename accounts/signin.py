"""People sign in to the pages with a username and a password: argon2id hashes, a password
policy, failed sign-ins counted and the account locked after too many, and server-side
sessions (a random token in the cookie, its SHA-256 in ``user_session``) with an idle and an
absolute timeout. Bearer tokens (``accounts.service``) stay for machines.

Functions take an explicit session and never commit: the caller owns the unit of work — except
that a failed sign-in must be counted even though the caller answers with an error, so the
caller commits after ``SignInFailed`` too (the web route does)."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlmodel import Session, col

from accounts.models import User, UserSession
from accounts.service import get_user, hash_token
from core.errors import InvalidInput


# argon2id (the library's default type) with its RFC 9106 "low memory" parameters: 64 MiB,
# 3 passes, 4 lanes — ~50 ms on one core of the development machine.
def production_hasher() -> PasswordHasher:
    return PasswordHasher()


_hasher = production_hasher()
# Verified against when the username does not exist, so that an unknown name costs the same
# time as a wrong password (no enumeration of accounts by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MIN_LENGTH = 8
MAX_LENGTH = 128
CLASSES = 3  # of: lower-case, upper-case, digits, other characters (GB/T 22239 practice)


@dataclass(frozen=True)
class SignInPolicy:
    """What ``core.settings.WebSettings`` says about sign-in (built by the web layer)."""

    idle: timedelta = timedelta(minutes=60)
    max_age: timedelta = timedelta(hours=12)
    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)


class SignInFailed(Exception):
    """Wrong name or password, an inactive account, or a locked one. ``reason`` is for the
    audit trail only; the person is told the same words for a wrong name and a wrong
    password. ``locked_until`` is set when the account is (now) locked."""

    def __init__(
        self, reason: str, *, user: User | None = None, locked_until: datetime | None = None
    ):
        super().__init__(reason)
        self.reason = reason
        self.user = user
        self.locked_until = locked_until


# ---------------------------------------------------------------- passwords


def password_problem(password: str, *, username: str = "") -> str | None:
    """Why ``password`` is not acceptable (English message id for the catalogue), or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < CLASSES:
        return (
            "a password needs three of: lower-case letters, upper-case letters, digits, "
            "other characters"
        )
    if username and username.lower() in password.lower():
        return "a password must not contain the username"
    return None


def new_password(length: int = 14) -> str:
    """A random password that meets the policy (for first start and admin resets); no
    look-alike characters, as it is read off a screen and typed."""
    alphabet = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
    while True:
        body = "".join(secrets.choice(alphabet) for _ in range(length - 1))
        candidate = body[: length // 2] + secrets.choice("-_.!#%") + body[length // 2 :]
        if password_problem(candidate) is None:
            return candidate


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (checked against the policy by ``set_password``;
    the demo seed gives many demo accounts one shared hash)."""
    return _hasher.hash(password)


def set_password(
    session: Session,
    *,
    user_id: int,
    password: str,
    now: datetime,
    must_change: bool = False,
    end_sessions: bool = True,
) -> User:
    """Store ``password``'s hash. ``must_change``: an admin's reset — the person must choose
    their own at the next sign-in. The user's other sessions end unless ``end_sessions`` is
    False (the person changing their own password keeps the session they did it from: the
    caller ends the others with ``end_user_sessions(..., keep=...)``)."""
    user = get_user(session, user_id=user_id)
    if problem := password_problem(password, username=user.username):
        raise InvalidInput(problem, field="password")
    user.password_hash = _hasher.hash(password)
    user.password_changed_at = now
    user.must_change_password = must_change
    user.failed_logins, user.locked_until = 0, None
    session.add(user)
    session.flush()
    if end_sessions:
        end_user_sessions(session, user_id=user_id, now=now)
    return user


def authenticate(
    session: Session, *, username: str, password: str, now: datetime, policy: SignInPolicy
) -> User:
    """The active, unlocked user whose password this is; otherwise ``SignInFailed`` with the
    failure counted (commit after catching it). ``max_failures`` failures in a row lock the
    account for ``policy.lockout``."""
    user = session.scalars(select(User).where(col(User.username) == username)).first()
    if user is None or user.password_hash is None:
        _verify(_DUMMY_HASH, password)
        raise SignInFailed("unknown user" if user is None else "no password set", user=user)
    if user.locked_until is not None and user.locked_until > now:
        _verify(_DUMMY_HASH, password)
        raise SignInFailed("locked", user=user, locked_until=user.locked_until)
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        locked = None
        if user.failed_logins >= policy.max_failures:
            locked = user.locked_until = now + policy.lockout
        session.add(user)
        session.flush()
        raise SignInFailed("wrong password", user=user, locked_until=locked)
    if not user.active:
        raise SignInFailed("inactive", user=user)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins, user.locked_until = 0, None
    session.add(user)
    session.flush()
    return user


def unlock(session: Session, *, user_id: int) -> User:
    """An admin lifts a lock-out at once."""
    user = get_user(session, user_id=user_id)
    user.failed_logins, user.locked_until = 0, None
    session.add(user)
    session.flush()
    return user


def verify_password(user: User, password: str) -> bool:
    """Whether ``password`` is the user's (e.g. the current one, to change it)."""
    return user.password_hash is not None and _verify(user.password_hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------- sessions


def start_session(
    session: Session,
    *,
    user: User,
    now: datetime,
    policy: SignInPolicy,
    address: str | None = None,
    user_agent: str | None = None,
) -> tuple[str, UserSession]:
    """A new signed-in session: the token for the cookie (returned this once) and the row."""
    assert user.id is not None
    token = secrets.token_urlsafe(32)
    row = UserSession(
        token_hash=hash_token(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + policy.max_age,
        address=(address or "")[:64] or None,
        user_agent=(user_agent or "")[:255] or None,
    )
    session.add(row)
    session.flush()
    return token, row


# A session's last_seen_at is written at most this often: a page and its htmx requests do not
# each cost a write, and the idle timeout is accurate to this.
TOUCH_EVERY = timedelta(seconds=30)


def resume_session(
    session: Session, *, token: str, now: datetime, policy: SignInPolicy, touch: bool = True
) -> tuple[UserSession, User] | None:
    """The live session of cookie ``token`` and its active user, its idle clock reset; None
    when there is none (never was, signed out, idle too long, past its absolute end, user
    deactivated) — an expired one is ended on the way. ``touch=False``: a check that is
    not the person's doing (a live stream's periodic look) leaves the idle clock alone."""
    row = session.scalars(
        select(UserSession).where(col(UserSession.token_hash) == hash_token(token))
    ).first()
    if row is None or row.ended_at is not None:
        return None
    user = session.get(User, row.user_id)
    if (
        user is None
        or not user.active
        or now >= row.expires_at
        or now - row.last_seen_at >= policy.idle
    ):
        row.ended_at = now
        session.add(row)
        session.flush()
        return None
    if touch and now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.add(row)
        session.flush()
    return row, user


def end_session(session: Session, *, token: str, now: datetime) -> UserSession | None:
    """Sign out this browser; the ended row (None if there was no live one)."""
    row = session.scalars(
        select(UserSession).where(col(UserSession.token_hash) == hash_token(token))
    ).first()
    if row is None or row.ended_at is not None:
        return None
    row.ended_at = now
    session.add(row)
    session.flush()
    return row


def end_user_sessions(
    session: Session, *, user_id: int, now: datetime, keep: int | None = None
) -> int:
    """Sign the user out everywhere (but the session ``keep``); how many sessions ended."""
    stmt = (
        update(UserSession)
        .where(col(UserSession.user_id) == user_id, col(UserSession.ended_at).is_(None))
        .values(ended_at=now)
    )
    if keep is not None:
        stmt = stmt.where(col(UserSession.id) != keep)
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)
