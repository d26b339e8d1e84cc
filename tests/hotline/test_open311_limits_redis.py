"""The Open311 POST buckets shared through the real Redis (hotline.open311.limits): two
buckets with the same name — as two web processes have — take from one allowance, refill
on the injected clock, keep no client address readable in Redis; when Redis is out each
process falls back to its own bucket (open, not unlimited) and goes back to the shared one
once Redis answers again. Without Redis (embedded) the buckets are the process's own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.settings import Settings
from hotline import public_limits
from hotline.open311.limits import PREFIX, PostLimits, SharedBucket, TokenBucket

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture
def client(redis_url):
    """This test run's Redis database (tests/services.claim_redis_index), emptied first."""
    made = public_limits.redis_client(redis_url)
    made.flushdb()
    yield made
    made.flushdb()
    made.close()


def _other_process(client):
    """A client of its own, as another web process has."""
    kwargs = client.connection_pool.connection_kwargs
    return public_limits.redis_client(f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}")


def _pair(client, per_minute=60.0, burst=3) -> tuple[SharedBucket, SharedBucket]:
    name = f"test-{uuid.uuid4().hex[:8]}"  # a key space of this test's own
    return (
        SharedBucket(client, name=name, per_minute=per_minute, burst=burst),
        SharedBucket(_other_process(client), name=name, per_minute=per_minute, burst=burst),
    )


def test_given_two_processes_then_they_take_from_one_allowance(client):
    first, second = _pair(client)  # 3 at once, then one a second
    assert first.take("7", NOW) is None and second.take("7", NOW) is None
    assert first.take("7", NOW) is None
    # the allowance is spent, whichever process asks
    assert second.take("7", NOW) == pytest.approx(1.0)
    assert first.take("7", NOW) == pytest.approx(1.0)
    assert second.take("8", NOW) is None  # another key has its own bucket
    # refilled on the injected clock: half a second gives half a token, a second one token
    assert first.take("7", NOW + timedelta(milliseconds=500)) == pytest.approx(0.5)
    assert second.take("7", NOW + timedelta(seconds=1)) is None
    assert first.take("7", NOW + timedelta(seconds=1)) is not None
    # a process whose clock is behind neither refills nor winds the bucket back
    assert second.take("7", NOW) is not None
    assert first.take("7", NOW + timedelta(seconds=2)) is None


def test_given_shared_post_limits_then_every_process_counts_the_same_key_and_address(client):
    one = PostLimits.shared(client, per_key=(60.0, 2), per_address=(60.0, 3))
    two = PostLimits.shared(_other_process(client), per_key=(60.0, 2), per_address=(60.0, 3))
    assert one.check_key(41, NOW) is None and two.check_key(41, NOW) is None
    assert one.check_key(41, NOW) is not None and two.check_key(41, NOW) is not None
    for limits in (one, two, one):
        assert limits.check_address("203.0.113.7", NOW) is None
    assert two.check_address("203.0.113.7", NOW) is not None
    keys = [k.decode() for k in client.keys("*")]
    assert keys and all(k.startswith(PREFIX) for k in keys)
    assert not any("203.0.113.7" in k or k.endswith(":41") for k in keys)  # hashed
    # a bucket left alone until it is full again is Redis's to forget
    ttl = client.pttl(public_limits.hashed_key(PREFIX, "per_key", "41"))
    assert 0 < ttl <= 2 * 1000 + 1000


def test_given_a_known_key_then_both_buckets_in_one_call_address_first(client):
    one = PostLimits.shared(client, per_key=(60.0, 2), per_address=(60.0, 3))
    two = PostLimits.shared(_other_process(client), per_key=(60.0, 2), per_address=(60.0, 3))
    calls = []
    script = one.per_key._script

    def counted(*args, **kwargs):
        calls.append(kwargs["keys"])
        return script(*args, **kwargs)

    one.per_key._script = one.per_address._script = counted
    assert one.check(address="203.0.113.7", client_id=41, now=NOW) is None
    assert len(calls) == 1 and len(calls[0]) == 2  # one call, both buckets
    assert two.check(address="203.0.113.7", client_id=41, now=NOW) is None
    # the key's two are spent: refused on the key (position 1), the address's token taken
    assert one.check(address="203.0.113.7", client_id=41, now=NOW) == (1, pytest.approx(1.0))
    # the address's three are spent: refused on it (position 0), the key not asked
    assert two.check(address="203.0.113.7", client_id=42, now=NOW) == (0, pytest.approx(1.0))
    assert two.check_key(42, NOW) is None and two.check_key(42, NOW) is None
    # what Redis gave this process is counted in it too, so that an outage starts from
    # there: one of the key's tokens and two of the address's
    local_key, local_address = one.per_key.fallback, one.per_address.fallback
    assert local_key.take("41", NOW) is None and local_key.take("41", NOW) is not None
    assert local_address.take("203.0.113.7", NOW) is None
    assert local_address.take("203.0.113.7", NOW) is not None


def test_given_redis_out_then_each_process_keeps_its_own_bucket_and_comes_back(client):
    shared = SharedBucket(client, name=f"test-{uuid.uuid4().hex[:8]}", per_minute=60, burst=3)
    assert shared.take("7", NOW) is None
    working = shared.client
    shared.client = public_limits.redis_client(NOWHERE)
    shared._script = shared.client.register_script(public_limits.BUCKETS)
    # open, not shut: a partner system is not refused because a cache is down ...
    assert shared.take("9", NOW) is None
    # ... but not unlimited either: this process's bucket, which saw the token taken before
    assert shared.take("7", NOW) is None and shared.take("7", NOW) is None
    assert shared.take("7", NOW) == pytest.approx(1.0)
    # Redis back: asked again once RETRY has passed, and its bucket is the one that holds
    shared.client, shared._script = working, working.register_script(public_limits.BUCKETS)
    assert shared.take("7", NOW + timedelta(milliseconds=100)) is not None  # still local
    later = NOW + public_limits.RETRY
    # Redis's bucket: one token taken at NOW, full again 10 s later — three, not the
    # local bucket's none
    assert all(shared.take("7", later) is None for _ in range(3))
    assert shared.take("7", later) is not None
    assert client.exists(shared_key := public_limits.hashed_key(PREFIX, shared.name, "7"))
    assert float(client.hget(shared_key, "tokens")) < 1


def test_given_redis_unreachable_from_the_start_then_asked_again_only_after_retry(client, caplog):
    down = SharedBucket(
        public_limits.redis_client(NOWHERE), name=f"test-{uuid.uuid4().hex[:8]}",
        per_minute=60, burst=2,
    )  # fmt: skip
    calls = []
    real = down._script

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    down._script = counted
    with caplog.at_level("WARNING"):
        assert down.take("7", NOW) is None and down.take("7", NOW) is None
        assert down.take("7", NOW) is not None
    assert len(calls) == 1  # one failed call, then the back-off: no timeout per request
    assert len([r for r in caplog.records if "Redis failed" in r.getMessage()]) == 1
    down.take("7", NOW + public_limits.RETRY)
    assert len(calls) == 2


def test_given_redis_configured_then_shared_else_in_process(redis_url, tmp_path):
    embedded = PostLimits.for_settings(Settings(environment="test", data_dir=tmp_path))
    assert isinstance(embedded.per_key, TokenBucket)
    assert isinstance(embedded.per_address, TokenBucket)
    production = PostLimits.for_settings(
        Settings(environment="test", data_dir=tmp_path, broker_url=redis_url)
    )
    assert isinstance(production.per_key, SharedBucket)
    assert isinstance(production.per_address, SharedBucket)
    assert (production.per_key.per_minute, production.per_key.burst) == (600.0, 120)
    assert (production.per_address.per_minute, production.per_address.burst) == (60.0, 30)
