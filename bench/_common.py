"""Shared pieces of the benchmarks: the machine they ran on, small statistics, fresh
databases, the demo rule book plus synthetic rules, and realistic request texts.

Benchmarks print figures; they are not tests and CI does not run them.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.db import make_engine, make_session_factory, session_scope
from dispatch import rulebook
from hotline import migrate
from hotline.seed import seed_demo
from tickets.models import Channel, RequestType, TicketCreate

SYNTHETIC_PACK = "bench-synthetic"
# After the default pack, whose lowest precedence is 90: synthetic rules never shadow it.
SYNTHETIC_PRIORITY = 1000


# ---------------------------------------------------------------- machine and statistics


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(statistics.median(ms), 3),
        "p95": round(percentile(ms, 95), 3),
        "max": round(max(ms), 3),
        "n": len(ms),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ---------------------------------------------------------------- databases


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A fresh file database in a temp dir, migrated as a deployment is."""
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        yield url


@contextmanager
def postgres_database(prefix: str = "hotline_bench") -> Iterator[str]:
    """A fresh PostgreSQL database on the test suite's server, migrated, dropped after."""
    from tests.services import create_database

    url, drop = create_database(prefix)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop()


def postgres_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SHOW server_version")).scalar_one()


# ---------------------------------------------------------------- rule book


def synthetic_keywords(index: int) -> list[str]:
    # The code number keeps them apart from each other and from any real wording.
    return [f"专项{index:04d}号事项", f"试点{index:04d}号工程", f"编号{index:04d}的设施"]


def synthetic_units() -> list[str]:
    import yaml

    units = yaml.safe_load(rulebook.DEFAULT_UNITS_PATH.read_text("utf-8"))["units"]
    return [u["code"] for u in units if u["level"] != "centre"]


def synthetic_pack(n_rules: int) -> str:
    units = synthetic_units()
    rules = [
        {
            "name": f"synthetic-{i:04d}",
            "priority": SYNTHETIC_PRIORITY + i,
            "description": "bench: synthetic keyword rule",
            "conditions": {"text_any": synthetic_keywords(i)},
            "actions": {
                "category_code": f"99{i:04d}",
                "category_name": f"专项{i:04d}",
                "lead_unit": units[i % len(units)],
                "sla_policy": "general",
            },
        }
        for i in range(n_rules)
    ]
    return json.dumps({"pack": SYNTHETIC_PACK, "version": 1, "rules": rules}, ensure_ascii=False)


def seed(url: str, *, now: datetime, n_rules: int) -> dict[str, Any]:
    """Demo units, policies, users and the default rule pack, plus `n_rules` synthetic
    keyword rules, committed."""
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            demo = seed_demo(session=session, now=now)
            counts = rulebook.import_pack(
                session, text=synthetic_pack(n_rules), fmt="json", now=now
            )
            return {
                "rules_total": len(rulebook.list_rules(session)),
                "synthetic_rules": counts["created"],
                "users": len(demo["users"]),
            }
    finally:
        engine.dispose()


# ---------------------------------------------------------------- request texts

_OPENINGS = [
    "市民来电反映：",
    "来电人称，",
    "您好，我想反映一个情况，",
    "市民通过网站留言：",
    "来电人情绪比较激动，表示",
    "来电人为附近居民，反映",
]
# (title, sentence) pairs worded the way callers speak; each hits one default rule.
_DEFAULT_ISSUES = [
    ("燃气泄漏", "楼道里从昨天晚上开始一直有很重的煤气味，担心出事，家里有老人和孩子"),
    ("井盖缺失", "路口的下水井盖不见了，晚上路灯暗，已经有电动车差点掉进去"),
    ("停水", "家里从早上七点开始停水，没有收到任何停水通知，做饭洗漱都成了问题"),
    ("停电", "单元楼从下午开始停电，冰箱里的东西都快坏了，也不知道什么时候恢复供电"),
    ("暖气不热", "今年供暖开始以后家里暖气不热，室内温度只有十几度，老人孩子都冻感冒了"),
    ("施工噪音", "旁边工地每天打桩到很晚，声音非常大，严重影响周边休息"),
    ("欠薪", "在一家装饰公司干了三个月，老板一直拖欠工资，找了好几次都说再等等"),
    ("占道经营", "菜市场门口很多流动摊贩占道经营，行人只能走到机动车道上"),
    ("垃圾", "楼下的垃圾桶已经满了好几天没有人清运，气味很大，苍蝇蚊子很多"),
    ("路灯", "沿河那段路的路灯不亮已经一个多星期了，晚上走路很不安全"),
    ("公交", "早高峰的公交车经常甩站，等了四十分钟都上不去车，上班天天迟到"),
    ("电梯故障", "住宅楼的电梯故障停运半个月了，住在高层的老人上下楼非常困难"),
    ("食品安全", "在一家超市买到了过期食品，找商家理论对方不承认，还态度恶劣"),
    ("医保", "异地就医的医保报销一直办不下来，材料交了好几次都说不全"),
    ("入学", "孩子今年上小学，按片区应该在学区内入学，但学校说名额满了"),
]
# Requests no rule routes: they go to the manual dispatch queue.
_UNROUTED_ISSUES = [
    ("咨询", "想问一下本市有没有针对自由职业者的创业扶持，具体需要准备什么材料，去哪里申请"),
    ("建议", "建议在东门附近增加几个便民座椅，方便附近的老人散步时歇歇脚"),
    ("咨询", "想咨询一下个人所得税专项附加扣除怎么填报，手机上的软件找不到入口"),
    ("求助", "家里的老人走失了两个小时，穿着蓝色上衣，家人正在附近寻找，希望帮忙发布信息"),
]
_FILLERS = [
    "这个情况已经持续了好几天了",
    "之前也打过电话反映过，但是一直没有得到解决",
    "周围很多居民都有意见",
    "希望有关部门能够尽快派人来现场看一看",
    "给大家的日常生活带来了很大的不便",
    "来电人要求尽快处理并回复处理结果",
    "来电人表示如果再得不到解决会继续反映",
    "具体位置来电人说可以到现场指认",
    "来电人希望工作人员联系时先打电话确认",
    "来电人说白天上班，晚上六点以后方便接听电话",
    "来电人表示之前也自己想过办法，但是没有用",
    "来电人对以前的处理结果不太满意",
]
_DISTRICTS = ["榆阳区", "横山区", "神木市"]
_STREETS = ["鼓楼街道", "青山路街道", "上郡路街道", "城关街道", "夏州街道", "麟州街道", "滨河街道"]


def request_texts(
    n: int,
    *,
    n_rules: int,
    seed_value: int = 12345,
    length: int = 300,
    shares: tuple[float, float] = (0.65, 0.15),
) -> list[TicketCreate]:
    """`n` intakes of about `length` characters: a share hitting default rules, a share
    hitting synthetic rules, the rest routed by no rule."""
    rng = random.Random(seed_value)
    made: list[TicketCreate] = []
    for i in range(n):
        roll = rng.random()
        if roll < shares[0]:
            title, issue = rng.choice(_DEFAULT_ISSUES)
        elif roll < shares[0] + shares[1] and n_rules:
            k = rng.randrange(n_rules)
            title, issue = (
                f"专项{k:04d}",
                (f"关于{rng.choice(synthetic_keywords(k))}的问题，相关单位迟迟没有落实"),
            )
        else:
            title, issue = rng.choice(_UNROUTED_ISSUES)
        district = rng.choice(_DISTRICTS)
        street = rng.choice(_STREETS)
        parts = [rng.choice(_OPENINGS), f"在{district}{street}，", issue, "。"]
        while sum(map(len, parts)) < length:
            parts.append(rng.choice(_FILLERS) + "，")
        description = "".join(parts)[:length].rstrip("，") + "。"
        made.append(
            TicketCreate(
                channel=Channel.phone,
                caller_name=f"市民{i % 997}",
                caller_phone=f"139{rng.randrange(10**8):08d}",
                address=f"{district}{street}",
                district=district,
                street=street,
                title=title,
                description=description,
                request_type=rng.choice(
                    [RequestType.help, RequestType.complaint, RequestType.consultation]
                ),
            )
        )
    return made


def session_factory(url: str) -> tuple[Engine, Callable[[], Session]]:
    engine = make_engine(url)
    return engine, make_session_factory(engine)


def say(message: str) -> None:
    """Progress, on stderr: stdout carries the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over all cores (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # guest time is already counted in user
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def machine_cpu_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How busy the machine was between two `machine_busy()` readings, in % of one core."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100 * busy / total * (os.cpu_count() or 1), 1) if total > 0 else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def verdicts(result: dict[str, Any], targets: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Each target's value, bound and whether it is met (None when not measured)."""
    out = {}
    for key, (op, bound) in targets.items():
        value = result.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"value": value, "target": f"{op} {bound}", "met": met}
    return out


class ChildServer:
    """A web server the benchmark started as a child process on a loopback port: waiting
    until it listens, and stopping it (SIGTERM, then kill). Subclasses set ``label``,
    ``port``, ``log`` and ``proc`` when they start it."""

    label: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    def wait_ready(self, timeout: float = 60) -> None:
        from tests.services import port_open

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited: see {self.log}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} server did not listen within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
