"""Open311 POST rate limits through two apps — two web processes — on one platform with
Redis: the allowance of an API key is one for both, the second app answers 429 with
Retry-After in the asked format once the first has spent it, and nothing is filed for a
refused request. Embedded (no Redis) each app keeps its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from core.settings import Settings
from hotline import public_limits
from hotline.open311 import clients
from hotline.open311.limits import PostLimits, SharedBucket, TokenBucket
from tests.web.test_open311_api import WAGES, _errors_json, _errors_xml
from tickets.models import Ticket
from web.app import create_app

V2 = "/open311/v2"


@pytest.fixture
def redis(redis_url):
    made = public_limits.redis_client(redis_url)
    made.flushdb()
    yield made
    made.flushdb()
    made.close()


@pytest.fixture
def two_apps(session_factory, clock, redis_url, redis) -> Iterator[list[TestClient]]:
    settings = Settings(environment="test", broker_url=redis_url)
    apps = [create_app(settings=settings, session_factory=session_factory, clock=clock)
            for _ in range(2)]  # fmt: skip
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        yield [one, two]


@pytest.fixture
def key(session, world, clock) -> str:
    _, made = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    return made


def _post(client: TestClient, key: str, fmt: str = "json"):
    return client.post(f"{V2}/requests.{fmt}", data={**WAGES, "api_key": key})


def test_given_redis_then_each_app_shares_its_buckets_through_it(two_apps, key):
    for client in two_apps:
        assert _post(client, key).status_code == 201
        limits = client.app.state.open311_limits
        assert isinstance(limits.per_key, SharedBucket)
        assert isinstance(limits.per_address, SharedBucket)


def test_given_two_apps_then_an_api_key_has_one_allowance(two_apps, session, redis, key):
    one, two = two_apps
    for client in two_apps:  # two a minute, both at once
        client.app.state.open311_limits = PostLimits.shared(
            redis, per_key=(2.0, 2), per_address=(600.0, 100)
        )
    assert _post(one, key).status_code == 201
    assert _post(two, key).status_code == 201
    for client, fmt in ((one, "json"), (two, "xml")):
        response = _post(client, key, fmt)
        said = (_errors_json if fmt == "json" else _errors_xml)(response, 429)
        assert said == ["too many requests from this api_key; retry in 30 s"]
        assert response.headers["Retry-After"] == "30"
    assert len(session.exec(select(Ticket)).all()) == 2


def test_given_two_apps_then_a_client_address_has_one_allowance(two_apps, session, redis, key):
    one, two = two_apps
    for client in two_apps:
        client.app.state.open311_limits = PostLimits.shared(
            redis, per_key=(600.0, 100), per_address=(1.0, 1)
        )
    assert _post(two, key).status_code == 201
    (said,) = _errors_json(_post(one, key), 429)
    assert said.startswith("too many requests from this client address")
    # refused before the key is looked up: a bad key is refused the same way
    (said,) = _errors_json(_post(one, "not-a-key"), 429)
    assert said.startswith("too many requests from this client address")
    assert len(session.exec(select(Ticket)).all()) == 1


def test_given_no_redis_then_each_app_keeps_its_own_buckets(client, key):
    assert _post(client, key).status_code == 201
    limits = client.app.state.open311_limits
    assert isinstance(limits.per_key, TokenBucket)
    assert isinstance(limits.per_address, TokenBucket)
