"""Passwords, failed sign-ins, lock-out and sessions (accounts.signin, accounts.audit), on both
backends, with an injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accounts import audit
from accounts.models import Role
from accounts.service import create_user
from accounts.signin import (
    SignInFailed,
    SignInPolicy,
    authenticate,
    end_session,
    end_user_sessions,
    new_password,
    password_problem,
    resume_session,
    set_password,
    start_session,
    unlock,
)
from core.errors import InvalidInput

POLICY = SignInPolicy(
    idle=timedelta(minutes=60),
    max_age=timedelta(hours=12),
    max_failures=3,
    lockout=timedelta(minutes=15),
)
GOOD = "Hotline-12345"


@pytest.fixture
def user(session, clock):
    made, _ = create_user(
        session, username="wang.fang", display_name="王芳", role=Role.operator, now=clock.now()
    )
    set_password(session, user_id=made.id, password=GOOD, now=clock.now())
    return made


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1!", "at least 8"),
        ("alllowercase", "three of"),
        ("lowerUPPER", "three of"),
        ("Wang.Fang-2026", "username"),
        ("x" * 129, "at most"),
    ],
)
def test_given_weak_passwords_then_each_refused_with_its_reason(password, problem):
    assert problem in (password_problem(password, username="wang.fang") or "")


def test_given_generated_passwords_then_they_meet_the_policy():
    for _ in range(50):
        assert password_problem(new_password()) is None


def test_given_weak_password_when_set_then_invalid_input_and_nothing_stored(session, user, clock):
    with pytest.raises(InvalidInput):
        set_password(session, user_id=user.id, password="short", now=clock.now())
    assert authenticate(
        session, username="wang.fang", password=GOOD, now=clock.now(), policy=POLICY
    )


def test_given_right_password_then_signed_in_and_hash_is_argon2id(session, user, clock):
    assert user.password_hash.startswith("$argon2id$")
    signed = authenticate(
        session, username="wang.fang", password=GOOD, now=clock.now(), policy=POLICY
    )
    assert signed.id == user.id


@pytest.mark.parametrize(
    ("username", "password"), [("wang.fang", "Wrong-pass-1"), ("nobody", GOOD)]
)
def test_given_wrong_name_or_password_then_the_same_failure(
    session, user, clock, username, password
):
    with pytest.raises(SignInFailed) as failed:
        authenticate(session, username=username, password=password, now=clock.now(), policy=POLICY)
    assert str(failed.value) in ("wrong password", "unknown user")


def test_given_max_failures_then_locked_even_with_the_right_password_until_lockout_ends(
    session, user, clock
):
    for _ in range(3):
        with pytest.raises(SignInFailed) as failed:
            authenticate(
                session,
                username="wang.fang",
                password="Wrong-pass-1",
                now=clock.now(),
                policy=POLICY,
            )
    assert failed.value.locked_until == clock.now() + POLICY.lockout
    with pytest.raises(SignInFailed, match="locked"):
        authenticate(session, username="wang.fang", password=GOOD, now=clock.now(), policy=POLICY)
    later = clock.now() + POLICY.lockout + timedelta(seconds=1)
    assert authenticate(session, username="wang.fang", password=GOOD, now=later, policy=POLICY)
    assert user.failed_logins == 0 and user.locked_until is None


def test_given_locked_account_when_admin_unlocks_then_signs_in_at_once(session, user, clock):
    for _ in range(3):
        with pytest.raises(SignInFailed):
            authenticate(
                session,
                username="wang.fang",
                password="Wrong-pass-1",
                now=clock.now(),
                policy=POLICY,
            )
    unlock(session, user_id=user.id)
    assert authenticate(
        session, username="wang.fang", password=GOOD, now=clock.now(), policy=POLICY
    )


def test_given_inactive_user_then_refused(session, user, clock):
    user.active = False
    with pytest.raises(SignInFailed, match="inactive"):
        authenticate(session, username="wang.fang", password=GOOD, now=clock.now(), policy=POLICY)


def test_given_session_then_resumed_until_idle_timeout(session, user, clock):
    token, row = start_session(
        session, user=user, now=clock.now(), policy=POLICY, address="10.0.0.7"
    )
    assert row.address == "10.0.0.7" and len(row.csrf_token) >= 32
    assert row.token_hash != token  # only the hash is stored
    t = clock.now() + timedelta(minutes=59)
    resumed = resume_session(session, token=token, now=t, policy=POLICY)
    assert resumed is not None and resumed[1].id == user.id
    # idle counts from the last request, not from the start
    assert resume_session(session, token=token, now=t + timedelta(minutes=59), policy=POLICY)
    assert (
        resume_session(session, token=token, now=t + timedelta(minutes=119), policy=POLICY) is None
    )
    assert row.ended_at is not None


def test_given_active_session_then_ends_at_its_absolute_end(session, user, clock):
    token, _ = start_session(session, user=user, now=clock.now(), policy=POLICY)
    t = clock.now()
    for _ in range(24):  # busy all shift: a request every half hour
        t += timedelta(minutes=30)
        resumed = resume_session(session, token=token, now=t, policy=POLICY)
        if t - clock.now() < POLICY.max_age:
            assert resumed is not None
        else:
            assert resumed is None


def test_given_sign_out_and_sign_out_everywhere_then_sessions_end(session, user, clock):
    now = clock.now()
    tokens = [start_session(session, user=user, now=now, policy=POLICY)[0] for _ in range(3)]
    assert end_session(session, token=tokens[0], now=now) is not None
    assert resume_session(session, token=tokens[0], now=now, policy=POLICY) is None
    assert end_user_sessions(session, user_id=user.id, now=now) == 2
    assert all(resume_session(session, token=t, now=now, policy=POLICY) is None for t in tokens)


def test_given_password_changed_then_other_sessions_end(session, user, clock):
    token, _ = start_session(session, user=user, now=clock.now(), policy=POLICY)
    set_password(session, user_id=user.id, password="Another-pass-9", now=clock.now())
    assert resume_session(session, token=token, now=clock.now(), policy=POLICY) is None


def test_given_deactivated_user_then_sessions_stop_working(session, user, clock):
    token, _ = start_session(session, user=user, now=clock.now(), policy=POLICY)
    user.active = False
    session.add(user)
    assert resume_session(session, token=token, now=clock.now(), policy=POLICY) is None


def test_given_audit_entries_then_newest_first_and_filtered(session, user, clock):
    audit.record(session, at=clock.now(), action="sign_in", user_id=user.id, address="10.0.0.7")
    audit.record(
        session,
        at=clock.now(),
        action="sign_in",
        username="nobody",
        outcome="failed",
        address="10.0.0.8",
    )
    got = audit.entries(session, action="sign_in")
    assert [e.outcome for e in got[:2]] == ["failed", "ok"]
    assert audit.entries(session, user_id=user.id)[0].address == "10.0.0.7"


def test_the_production_hasher_is_argon2id_with_rfc_9106_low_memory_parameters():
    from accounts.signin import production_hasher

    hasher = production_hasher()
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 65536, 4)
    assert hasher.hash("x").startswith("$argon2id$v=19$m=65536,t=3,p=4$")
