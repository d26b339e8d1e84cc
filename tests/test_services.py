"""tests.services on a fresh machine: with no PostgreSQL or Redis listening, it starts its
own (PostgreSQL as the postgres user when we are root), hands out a database and a Redis
index of this run's own, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import redis

from tests import services

ROOT = Path(__file__).resolve().parent.parent

FRESH_MACHINE = r"""
import json, os, pwd, psycopg, redis
from tests import services

url, drop = services.create_database("hotline_fresh")
pg_host, pg_port = services.postgres_server()
dbname = url.rsplit("/", 1)[1]
with psycopg.connect(f"host={pg_host} port={pg_port} user=postgres dbname={dbname}") as conn:
    conn.execute("CREATE TABLE probe (id int)")
    conn.execute("INSERT INTO probe VALUES (1)")
    data_dir = conn.execute("SHOW data_directory").fetchone()[0]
owner = pwd.getpwuid(os.stat(data_dir).st_uid).pw_name
drop()
with psycopg.connect(f"host={pg_host} port={pg_port} user=postgres dbname=postgres") as conn:
    left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                        (dbname,)).fetchone()[0]

first, release_first = services.claim_redis_index()
second, release_second = services.claim_redis_index()
r = redis.Redis.from_url(first)
r.set("probe", "1")
redis_dir = r.config_get("dir")["dir"]
release_first()
release_second()
print(json.dumps({"pg_port": pg_port, "data_dir": data_dir, "owner": owner,
                  "db_left": left, "redis": [first, second],
                  "redis_port": services.redis_server()[1], "redis_dir": redis_dir}))
"""


def test_given_no_postgres_or_redis_listening_then_own_servers_are_started_and_cleaned_up():
    closed_pg, closed_redis = services.free_port(), services.free_port()
    env = {
        **os.environ,
        "HOTLINE_TEST_PG_PORT": str(closed_pg),
        "HOTLINE_TEST_REDIS_PORT": str(closed_redis),
    }

    proc = subprocess.run(
        [sys.executable, "-c", FRESH_MACHINE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["pg_port"] != closed_pg
    assert seen["db_left"] == 0
    if os.geteuid() == 0:
        assert seen["owner"] == "postgres"  # PostgreSQL refuses to run as root
    first, second = seen["redis"]
    assert first.rsplit("/", 1)[0] == second.rsplit("/", 1)[0]
    assert first != second
    assert f":{seen['redis_port']}/" in first
    # the servers stopped and their directories went away when the process exited
    assert not services.port_open("127.0.0.1", seen["pg_port"])
    assert not services.port_open("127.0.0.1", seen["redis_port"])
    assert not Path(seen["data_dir"]).exists()
    assert not Path(seen["redis_dir"]).exists()


def test_two_claims_of_a_redis_index_get_different_indexes_until_released():
    first, release_first = services.claim_redis_index()
    second, release_second = services.claim_redis_index()
    try:
        assert first != second
        redis.Redis.from_url(first).set("mine", "first")
        assert redis.Redis.from_url(second).get("mine") is None
    finally:
        release_second()
        release_first()
    assert redis.Redis.from_url(first).get("mine") is None


def test_each_created_database_is_new_and_dropped_by_its_dropper():
    url_a, drop_a = services.create_database()
    url_b, drop_b = services.create_database()
    host, port = services.postgres_server()
    names = [url_a.rsplit("/", 1)[1], url_b.rsplit("/", 1)[1]]
    try:
        assert names[0] != names[1]
    finally:
        drop_a()
        drop_b()
    with psycopg.connect(f"host={host} port={port} user=postgres dbname=postgres") as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", (names,)
        ).fetchone()[0]
    assert left == 0
