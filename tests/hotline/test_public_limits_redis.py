"""The public site's limits shared through the real Redis (hotline.public_limits): two
limiters with the same name — as two web processes have — count the same hits, the window
slides with the injected clock, phone numbers are not readable in Redis, and when Redis is
out the site keeps taking requests under each process's own limit, then goes back to the
shared count once Redis answers again. Without Redis (embedded) the limits are the
process's own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.settings import Settings
from hotline import public_limits
from hotline.public_limits import Limiter, Limits, SharedLimiter

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


@pytest.fixture
def client(redis_url):
    """This test run's Redis database (tests/services.claim_redis_index), emptied first."""
    made = public_limits.redis_client(redis_url)
    made.flushdb()
    yield made
    made.flushdb()
    made.close()


def _pair(client, limit=3, window=timedelta(hours=1)) -> tuple[SharedLimiter, SharedLimiter]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    return (
        SharedLimiter(client, name=name, limit=limit, window=window),
        SharedLimiter(public_limits.redis_client(client_url(client)), name=name, limit=limit,
                      window=window),
    )  # fmt: skip


def client_url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_given_two_processes_then_they_share_one_count(client):
    first, second = _pair(client)
    assert first.hit("10.0.0.1", NOW) and second.hit("10.0.0.1", NOW)
    assert first.hit("10.0.0.1", NOW + timedelta(minutes=1))
    # the third hit was the first process's; the second process is refused all the same
    assert second.blocked("10.0.0.1", NOW + timedelta(minutes=2))
    assert not second.hit("10.0.0.1", NOW + timedelta(minutes=2))
    assert not first.hit("10.0.0.1", NOW + timedelta(minutes=2))
    assert second.hit("10.0.0.2", NOW)  # another address has its own count
    # the window slides: the first two hits leave it an hour later, the third a minute after
    later = NOW + timedelta(hours=1)
    assert second.hit("10.0.0.1", later) and first.hit("10.0.0.1", later)
    assert not first.hit("10.0.0.1", later)


def test_given_limits_shared_then_one_submission_per_phone_counts_for_every_process(client):
    one, two = Limits.shared(client), Limits.shared(public_limits.redis_client(client_url(client)))
    for n in range(5):
        limits = one if n % 2 else two
        assert limits.allow_submission(address=f"10.1.0.{n}", phone="138 0000 1234", now=NOW)
    assert not one.allow_submission(address="10.1.0.9", phone="13800001234", now=NOW)
    assert not two.allow_submission(address="10.1.0.9", phone="13800001234", now=NOW)
    keys = [k.decode() for k in client.keys("*")]
    assert keys and all(k.startswith(public_limits.PREFIX) for k in keys)
    assert not any("13800001234" in k or "10.1.0" in k for k in keys)  # hashed


def test_given_redis_out_then_the_site_keeps_its_own_limit_and_comes_back(client, redis_url):
    shared = SharedLimiter(client, name=f"test-{uuid.uuid4().hex[:8]}", limit=2,
                           window=timedelta(hours=1))  # fmt: skip
    assert shared.hit("10.0.0.1", NOW)
    working = shared.client
    shared.client = public_limits.redis_client("redis://127.0.0.1:1/0")  # nothing listens
    shared._script = shared.client.register_script(public_limits._HIT)
    # open, not shut: a citizen is not refused because a cache is down ...
    assert not shared.blocked("10.0.0.9", NOW) and shared.hit("10.0.0.9", NOW)
    # ... but the process still limits: it counts the hit it saw before the outage too
    assert shared.hit("10.0.0.1", NOW) and not shared.hit("10.0.0.1", NOW)
    assert shared.hit("10.0.0.9", NOW) and not shared.hit("10.0.0.9", NOW)
    # Redis back: asked again once RETRY has passed, and its count is the one that holds
    shared.client, shared._script = working, working.register_script(public_limits._HIT)
    assert not shared.hit("10.0.0.1", NOW + timedelta(seconds=1))  # still the local answer
    later = NOW + public_limits.RETRY
    assert shared.hit("10.0.0.1", later)  # shared again: one hit of two so far
    assert not shared.hit("10.0.0.1", later)
    assert client.zcard(shared._key("10.0.0.1")) == 2


def test_given_redis_configured_then_shared_else_in_process(redis_url, tmp_path):
    embedded = Limits.for_settings(Settings(environment="test", data_dir=tmp_path))
    assert isinstance(embedded.per_address, Limiter)
    production = Limits.for_settings(
        Settings(environment="test", data_dir=tmp_path, broker_url=redis_url)
    )
    assert isinstance(production.per_address, SharedLimiter)
    assert isinstance(production.failed_lookups, SharedLimiter)
    assert (production.per_phone.limit, production.per_phone.window) == (5, timedelta(days=1))
