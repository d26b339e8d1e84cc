"""`hotline doctor`: the real program on SQLite in a temporary directory and once against
PostgreSQL and Redis; the checks it is made of with an injected clock and broken settings."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli import doctor
from core.clock import FrozenClock
from core.settings import Settings
from hotline import migrate
from tests import services
from tests.cli.test_config_errors import clean_env, hotline
from tests.services import free_port

CHECKS = ["database", "broker", "model", "prompts", "ports", "clock", "disk", "pages"]
LINE = re.compile(r"^(ok|warn|FAIL)\s+(\w+)\s+(.+)$")


def results(stdout: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in stdout.splitlines():
        match = LINE.match(line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3))
    return found


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    defaults = {
        "HOTLINE_DATA_DIR": str(tmp_path / "var"),
        "HOTLINE_WEB__HOST": "127.0.0.1",
        "HOTLINE_WEB__PORT": str(free_port()),
        "HOTLINE_TELEPHONY__HOST": "127.0.0.1",
        "HOTLINE_TELEPHONY__PORT": str(free_port()),
    }
    return clean_env(**{**defaults, **extra})


def test_given_no_database_when_doctor_then_it_fails_saying_where_it_looked_and_creates_nothing(
    tmp_path,
):
    env = local_env(tmp_path)
    del env["HOTLINE_DATA_DIR"]  # the default: var under the working directory

    proc = hotline("doctor", "--min-free-gb", "0", cwd=tmp_path, env=env)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = results(proc.stdout)
    assert list(found) == CHECKS
    status, detail = found["database"]
    assert status == "FAIL"
    assert f"no database at {tmp_path / 'var' / 'core.db'}" in detail
    assert "hotline db upgrade" in detail
    assert f"data dir: {tmp_path / 'var'} (HOTLINE_DATA_DIR is not set" in proc.stdout
    assert found["ports"][0] == "ok" and found["disk"][0] == "ok"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "var").exists()


def test_given_a_migrated_sqlite_centre_when_doctor_then_nothing_fails(tmp_path):
    env = local_env(tmp_path)
    assert hotline("db", "upgrade", cwd=tmp_path, env=env).returncode == 0

    proc = hotline("doctor", "--min-free-gb", "0.001", cwd=tmp_path, env=env)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = results(proc.stdout)
    assert found["database"] == (
        "ok",
        f"sqlite:///{tmp_path / 'var' / 'core.db'} at revision {migrate.head()}",
    )
    assert found["broker"][0] == "ok" and "local transport" in found["broker"][1]
    assert found["model"][0] == "ok"
    # Not built yet: a warning that says how to build them, not a failure.
    assert found["prompts"][0] == "warn" and "hotline prompts build" in found["prompts"][1]
    assert found["clock"][0] == "ok"


def test_given_the_web_port_taken_and_a_full_disk_when_doctor_then_both_fail_with_the_fix(
    tmp_path,
):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = local_env(tmp_path, HOTLINE_WEB__PORT=str(port))

        proc = hotline("doctor", "--min-free-gb", "1000000", cwd=tmp_path, env=env)

    assert proc.returncode == 1
    found = results(proc.stdout)
    assert found["ports"][0] == "FAIL"
    assert f"127.0.0.1:{port}/tcp (HOTLINE_WEB__PORT)" in found["ports"][1]
    assert found["disk"][0] == "FAIL" and "HOTLINE_TELEPHONY__RECORDING_DIR" in found["disk"][1]
    assert "check(s) failed: database, ports, disk" in proc.stderr


def test_given_postgresql_and_redis_when_doctor_then_it_checks_both_and_the_clock(
    tmp_path, redis_url
):
    url, drop = services.create_database("hotline_doctor")
    try:
        env = local_env(tmp_path, HOTLINE_DATABASE_URL=url, HOTLINE_BROKER_URL=redis_url)
        missing = hotline("doctor", "--min-free-gb", "0", cwd=tmp_path, env=env)
        assert hotline("db", "upgrade", cwd=tmp_path, env=env).returncode == 0

        proc = hotline("doctor", "--min-free-gb", "0", cwd=tmp_path, env=env)
    finally:
        drop()

    assert missing.returncode == 1
    assert results(missing.stdout)["database"][0] == "FAIL"
    assert "(HOTLINE_DATABASE_URL)" in results(missing.stdout)["database"][1]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = results(proc.stdout)
    assert found["database"][0] == "ok" and f"at revision {migrate.head()}" in found["database"][1]
    assert found["broker"][0] == "ok" and "Redis at redis://" in found["broker"][1]
    assert found["clock"][0] == "ok" and "the database server" in found["clock"][1]


@pytest.fixture
def pg_settings(tmp_path):
    url, drop = services.create_database("hotline_doctor")
    yield Settings(database_url=url, data_dir=tmp_path / "var")
    drop()


@pytest.mark.parametrize(
    "offset, status",
    [(timedelta(0), "ok"), (timedelta(seconds=10), "warn"), (-timedelta(minutes=5), "FAIL")],
)
def test_clock_skew_against_the_database_server(pg_settings, offset, status):
    clock = FrozenClock(datetime.now(UTC) + offset)

    check = doctor.check_clock(pg_settings, clock)

    assert check.status == status, check.detail
    if status != "ok":
        assert ("behind" if offset < timedelta(0) else "ahead of") in check.detail
        assert "NTP" in check.detail


def test_given_redis_does_not_answer_then_the_broker_check_fails_naming_the_setting(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")

    check = doctor.check_broker(settings)

    assert check.status == "FAIL" and "HOTLINE_BROKER_URL" in check.detail


def test_given_production_without_a_broker_then_the_broker_check_fails(tmp_path):
    settings = Settings(data_dir=tmp_path, environment="production", secret_key="k" * 40)

    check = doctor.check_broker(settings)

    assert check.status == "FAIL" and "HOTLINE_BROKER_URL is not set" in check.detail


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_given_an_unusable_model_path_then_the_model_check_fails_naming_the_setting(
    tmp_path, layout
):
    path = tmp_path / "model"
    if layout == "empty":
        path.mkdir()
    settings = Settings(data_dir=tmp_path, asr={"model_path": path})

    check = doctor.check_model(settings)

    assert check.status == "FAIL"
    assert str(path) in check.detail and "HOTLINE_ASR__MODEL_PATH" in check.detail


def test_given_built_prompts_then_the_prompt_check_is_ok(tmp_path):
    from hotline.calls import setup

    settings = Settings(data_dir=tmp_path)
    prompts = setup.prompt_set(settings)
    prompts.directory.mkdir(parents=True)
    for name in prompts.texts:
        prompts.path(name).write_bytes(b"RIFF")
    assert doctor.check_prompts(settings).status == "ok"

    prompts.path(sorted(prompts.texts)[0]).unlink()

    check = doctor.check_prompts(settings)
    assert check.status == "warn" and f"1 of {len(prompts.texts)}" in check.detail


@pytest.mark.parametrize(
    ("mode", "libc", "status", "said"),
    [
        ("always [madvise] never", "glibc 2.36", "ok", "(madvise, glibc 2.36)"),
        ("[always] madvise never", "glibc 2.41", "ok", "(always, glibc 2.41)"),
        ("always madvise [never]", "glibc 2.36", "warn", "echo madvise >"),
        ("always [madvise] never", "glibc 2.31", "warn", "glibc >= 2.35"),
        ("always [madvise] never", "", "warn", "this C library"),
        (None, "glibc 2.36", "warn", "no transparent huge pages in this kernel"),
    ],
)
def test_the_pages_check_says_whether_the_decoders_get_huge_pages(
    tmp_path, mode, libc, status, said
):
    thp = tmp_path / "enabled"
    if mode is not None:
        thp.write_text(mode + "\n")
    found = doctor.check_pages(Settings(), thp=thp, libc=libc, cpus=4)  # decoder processes
    assert (found.name, found.status) == ("pages", status) and said in found.detail
    off = doctor.check_pages(Settings(asr={"huge_pages": False}), thp=thp, libc=libc)
    assert off.status == "ok" and "HOTLINE_ASR__HUGE_PAGES" in off.detail
    # Decoding in the SIP process (the default on 2 CPUs): huge pages only with the tunable.
    threads = doctor.check_pages(Settings(), thp=thp, libc=libc, cpus=2, env={})
    if status == "ok":
        assert threads.status == "ok" and "4 kB pages" in threads.detail
        assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in threads.detail
        tuned = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
        given = doctor.check_pages(Settings(), thp=thp, libc=libc, cpus=2, env=tuned)
        assert given.status == "ok" and "decoders on transparent huge pages" in given.detail
        chosen = Settings(asr={"decode_processes": 2})
        assert (
            "decoders on transparent"
            in doctor.check_pages(chosen, thp=thp, libc=libc, cpus=2, env={}).detail
        )
    else:  # the kernel or the C library is what to fix, whichever way the decoding runs
        assert threads.detail == found.detail


def test_given_this_machine_then_the_pages_check_reads_its_kernel_and_libc():
    found = doctor.check_pages(Settings())
    mode = doctor.THP_MODE.read_text()
    assert found.status == ("warn" if "[never]" in mode else "ok"), found.detail
