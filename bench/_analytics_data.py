"""A year of a city's 12345 tickets for bench/analytics.py, generated in chunks and bulk
loaded (PostgreSQL ``COPY`` through psycopg, SQLite ``executemany`` in one transaction per
chunk) into a freshly migrated database.

The city: a centre, 20 city departments, 10 districts with 6 streets each and 4 utilities
(95 units, streets children of their district); two SLA policies (24 h / 168 h / 360 h on
the 24-hour clock, and 24 h / 5 / 10 working days). Tickets are spread over the year before
``now`` with a day-time peak, ids in intake order. Each ticket is one of:

* 直接办结 (``direct`` share): ``create`` + ``close_at_intake``, closed;
* 并单 (``merged``): a duplicate of a recent ticket — ``create``, ``merge``, ``close_merged``;
* dispatched (the rest): ``create`` (+ ``queue`` when no rule fired), ``dispatch`` to the lead
  unit its category goes to (the street of its district for local matters), then ``sign``,
  ``reply``, ``approve_reply``, ``callback`` (or ``close`` when the caller is unreachable),
  each at a realistic delay, some late against the assignment's stored deadlines; some are
  returned (``return`` + ``redispatch`` to the right unit: the first assignment withdrawn,
  ``return_count`` 1), some get an approved extension (``extension_count`` 1, deadlines
  moved 72 h, a ``note``), some a co-handling unit. A step that would fall after ``now`` has
  not happened yet: the ticket and its assignment stay where they are.

Then ``note`` events (escalation warnings) on dispatched tickets until the events reach the
target. Callers: a tenth from 20,000 frequent callers (half the time about their usual
category), so 重复诉求 occur. Everything is drawn from one seeded ``random.Random``: the same
sizes give the same data on both backends.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from dispatch import sla
from dispatch.calendar import WorkCalendar
from dispatch.models import ClockUnit

HOUR = 3600.0
DAY = 86400.0
EPOCH = datetime(1970, 1, 1)
CHUNK = 20_000

DISTRICTS = [
    "榆阳区", "横山区", "神木市", "府谷县", "靖边县",
    "定边县", "绥德县", "米脂县", "佳县", "吴堡县",
]  # fmt: skip
STREETS = ["鼓楼街道", "青山路街道", "上郡路街道", "城关街道", "新建路街道", "滨河街道"]
DEPARTMENTS = [
    ("HOUSING", "住房和城乡建设局"), ("TRANSPORT", "交通运输局"), ("EDU", "教育局"),
    ("HEALTH", "卫生健康委员会"), ("HRSS", "人力资源和社会保障局"), ("MARKET", "市场监督管理局"),
    ("ENV", "生态环境局"), ("URBAN", "城市管理执法局"), ("PSB", "公安局"),
    ("CIVIL", "民政局"), ("NATRES", "自然资源和规划局"), ("WATERRES", "水利局"),
    ("AGRI", "农业农村局"), ("COMMERCE", "商务局"), ("CULTURE", "文化和旅游局"),
    ("MEDINS", "医疗保障局"), ("TAX", "税务局"), ("EMERG", "应急管理局"),
    ("RETIRED", "退役军人事务局"), ("DATA", "数据局"),
]  # fmt: skip
UTILITIES = [("WATER", "市自来水公司"), ("POWER", "国网供电公司"), ("GAS", "市燃气公司"),
             ("HEAT", "市热力公司")]  # fmt: skip
# (code, name, who handles it: a department or utility code, or "street")
CATEGORIES = [
    ("010101", "房屋质量", "HOUSING"), ("010203", "物业服务", "street"),
    ("010301", "电梯故障", "MARKET"), ("020101", "道路破损", "TRANSPORT"),
    ("020201", "公交服务", "TRANSPORT"), ("020301", "出租车", "TRANSPORT"),
    ("030101", "入学咨询", "EDU"), ("030201", "校外培训", "EDU"),
    ("040101", "医疗服务", "HEALTH"), ("040201", "医保报销", "MEDINS"),
    ("050101", "拖欠工资", "HRSS"), ("050201", "社保办理", "HRSS"),
    ("060101", "食品安全", "MARKET"), ("060201", "消费纠纷", "MARKET"),
    ("070101", "噪声污染", "ENV"), ("070201", "大气污染", "ENV"),
    ("080101", "占道经营", "URBAN"), ("080201", "违章建筑", "URBAN"),
    ("080301", "垃圾清运", "street"), ("080401", "路灯照明", "URBAN"),
    ("090101", "治安管理", "PSB"), ("090201", "户籍办理", "PSB"),
    ("100101", "养老服务", "CIVIL"), ("100201", "低保救助", "CIVIL"),
    ("110101", "供水", "WATER"), ("110201", "供电", "POWER"),
    ("110301", "供气", "GAS"), ("110401", "供暖", "HEAT"),
    ("120101", "农村道路", "AGRI"), ("130101", "邻里纠纷", "street"),
]  # fmt: skip
CATEGORY_WEIGHTS = [
    4, 9, 3, 4, 3, 1, 3, 1, 3, 3, 4, 3, 3, 4, 5, 1, 4, 2, 4, 2, 2, 1, 2, 1, 4, 3, 2, 5, 1, 4,
]  # fmt: skip
CHANNELS = [("phone", 60), ("web", 20), ("api", 10), ("open311", 5), ("walk_in", 5)]
REQUEST_TYPES = [("consultation", 45), ("help", 25), ("complaint", 20), ("report", 5),
                 ("suggestion", 4), ("praise", 1)]  # fmt: skip
TEXTS = [
    "楼道里一直有很重的煤气味，担心出事，希望尽快派人查看",
    "路口的下水井盖不见了，晚上路灯暗，已经有电动车差点掉进去",
    "家里从早上开始停水，没有收到任何停水通知，做饭洗漱都成了问题",
    "旁边工地每天施工到很晚，声音非常大，严重影响周边居民休息",
    "在一家装饰公司干了三个月，老板一直拖欠工资，找了好几次都说再等等",
    "菜市场门口很多流动摊贩占道经营，行人只能走到机动车道上",
    "楼下的垃圾桶已经满了好几天没有人清运，气味很大",
    "想咨询一下孩子上小学需要准备哪些材料，去哪里办理",
    "住宅楼的电梯故障停运半个月了，住在高层的老人上下楼非常困难",
    "异地就医的医保报销一直办不下来，材料交了好几次都说不全",
]
SATISFACTION = [("satisfied", 80), ("basically_satisfied", 12), ("dissatisfied", 8)]
RETURN_REASONS = ["not_ours", "wrong_area", "duplicate"]

TICKET_COLUMNS = (
    "id", "number", "channel", "status", "caller_name", "caller_phone", "confidential",
    "address", "district", "street", "title", "description", "request_type", "urgency",
    "category_code", "category_name", "satisfaction", "parent_id", "return_count",
    "reopen_count", "created_at", "updated_at", "closed_at", "created_by", "event_seq",
)  # fmt: skip
ASSIGNMENT_COLUMNS = (
    "id", "ticket_id", "unit_id", "role", "status", "policy_id", "rule_name", "dispatched_by",
    "started_at", "sign_due_at", "reply_due_at", "close_due_at", "signed_at", "replied_at",
    "ended_at", "return_reason_code", "extension_count", "escalation_clock",
    "escalation_level",
)  # fmt: skip
EVENT_COLUMNS = ("ticket_id", "seq", "at", "actor", "action", "from_status", "to_status", "data")


@dataclass(frozen=True)
class Shape:
    tickets: int
    events: int
    now: datetime
    days: int = 365
    direct: float = 0.74  # 直接办结 share
    merged: float = 0.03
    seed: int = 18


@dataclass
class Loaded:
    """What was loaded: row counts, the unit ids by code, and the seconds it took."""

    tickets: int = 0
    events: int = 0
    assignments: int = 0
    units: dict[str, int] = field(default_factory=dict)
    load_s: float = 0.0


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> list[str]:
    return [v for v, w in weighted for _ in range(w)]


def stamp(seconds: float) -> str:
    """UTC epoch seconds → 'YYYY-MM-DD HH:MM:SS.ffffff', SQLAlchemy's SQLite format (and
    a timestamptz literal when the session's time zone is UTC)."""
    return (EPOCH + timedelta(seconds=seconds)).isoformat(" ", "microseconds")


def _epoch(at: datetime) -> float:
    return at.astimezone(UTC).timestamp()


# ---------------------------------------------------------------- reference data


def units() -> list[tuple[int, str, str, str, int | None, str | None]]:
    """(id, code, name, level, parent_id, district) of the city's 95 units."""
    rows: list[tuple[int, str, str, str, int | None, str | None]] = [
        (1, "CENTRE", "市12345热线中心", "centre", None, None)
    ]
    for code, name in DEPARTMENTS:
        rows.append((len(rows) + 1, code, name, "city", 1, None))
    for code, name in UTILITIES:
        rows.append((len(rows) + 1, code, name, "enterprise", 1, None))
    for d, district in enumerate(DISTRICTS):
        district_id = len(rows) + 1
        rows.append((district_id, f"D{d:02d}", f"{district}人民政府", "district", 1, district))
        for s, street in enumerate(STREETS):
            rows.append((len(rows) + 1, f"D{d:02d}S{s}", f"{district}{street}办事处", "street",
                         district_id, district))  # fmt: skip
    return rows


POLICIES = [
    # id, name, sign, sign_unit, reply, reply_unit, close, close_unit
    (1, "general", 24.0, "hours", 168.0, "hours", 360.0, "hours"),
    (2, "workday", 24.0, "hours", 5.0, "workdays", 10.0, "workdays"),
]


def _reference_rows() -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    unit_rows = [(*u, True) for u in units()]
    policy_rows = [(*p, 0.75, "[]", True) for p in POLICIES]
    return {
        "unit": (("id", "code", "name", "level", "parent_id", "district", "active"), unit_rows),
        "sla_policy": (
            ("id", "name", "sign_limit", "sign_unit", "reply_limit", "reply_unit",
             "close_limit", "close_unit", "warn_ratio", "chain", "active"),
            policy_rows,
        ),
    }  # fmt: skip


# ---------------------------------------------------------------- the tickets


class _Deadlines:
    """Assignment deadlines from the policies, working days through dispatch.sla (cached
    per started hour: the generator asks for hundreds of thousands)."""

    def __init__(self) -> None:
        self.calendar = WorkCalendar()
        self._cache: dict[tuple[int, float, int], float] = {}

    def add(self, start: float, amount: float, unit: str) -> float:
        if unit == "hours":
            return start + amount * HOUR
        hour = int(start // HOUR)
        key = (hour, amount, 0)
        base = self._cache.get(key)
        if base is None:
            at = datetime.fromtimestamp(hour * HOUR, UTC)
            base = _epoch(sla.add_time(at, amount, ClockUnit.workdays, self.calendar))
            self._cache[key] = base
        return base + (start - hour * HOUR)


class _Audit:
    """Appends one ticket's events, numbering them."""

    def __init__(self, rows: list[tuple[Any, ...]], ticket_id: int) -> None:
        self.rows, self.ticket_id, self.seq = rows, ticket_id, 0

    def __call__(self, at: float, action: str, before: str | None, after: str | None) -> None:
        self.seq += 1
        actor = "system" if action in ("dispatch", "note") else "op"
        self.rows.append((self.ticket_id, self.seq, stamp(at), actor, action, before, after, "{}"))


def generate(shape: Shape) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
    """Chunks of (tickets, assignments, events) rows in the *_COLUMNS orders."""
    rng = random.Random(shape.seed)
    now = _epoch(shape.now)
    first = now - shape.days * DAY
    unit_rows = units()
    by_code = {u[1]: u[0] for u in unit_rows}
    streets = {
        (u[5], u[2].removeprefix(u[5] or "").removesuffix("办事处")): u[0]
        for u in unit_rows
        if u[3] == "street"
    }
    leads = [u[0] for u in unit_rows if u[3] in ("city", "enterprise")]
    channels = _pick(rng, CHANNELS)
    request_types = _pick(rng, REQUEST_TYPES)
    satisfactions = _pick(rng, SATISFACTION)
    cat_index = list(range(len(CATEGORIES)))
    frequent = [(f"138{i:08d}", rng.choice(cat_index)) for i in range(20_000)]
    deadlines = _Deadlines()

    # intake instants: uniform days, a day-time peak (Beijing 08–20 h), sorted → ids in order
    created = []
    for _ in range(shape.tickets):
        day = first + rng.randrange(shape.days) * DAY
        local_hour = rng.gauss(13, 4) % 24
        created.append(day + ((local_hour - 8) % 24) * HOUR + rng.random() * 60)
    created.sort()
    created = [min(c, now - 1) for c in created]

    events_left = shape.events
    dispatched_ids: list[int] = []
    next_assignment = 1
    for start in range(0, shape.tickets, CHUNK):
        tickets: list[tuple[Any, ...]] = []
        assignments: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for offset, c in enumerate(created[start : start + CHUNK]):
            tid = start + offset + 1
            event = _Audit(events, tid)
            if rng.random() < 0.1:
                phone, usual = rng.choice(frequent)
                cat = usual if rng.random() < 0.5 else rng.choices(cat_index, CATEGORY_WEIGHTS)[0]
            else:
                phone = f"139{rng.randrange(600_000):08d}"
                cat = rng.choices(cat_index, CATEGORY_WEIGHTS)[0]
            code, cat_name, handler = CATEGORIES[cat]
            district = DISTRICTS[min(int(rng.expovariate(0.35)), len(DISTRICTS) - 1)]
            street = rng.choice(STREETS)
            status, closed, satisfaction, parent, returns = "intake", None, None, None, 0
            updated = c
            event(c, "create", None, "intake")
            roll = rng.random()
            if roll < shape.direct:
                closed = c + rng.uniform(60, 600)
                status = "closed"
                event(closed, "close_at_intake", "intake", "closed")
            elif roll < shape.direct + shape.merged and tid > 1:
                parent = max(1, tid - rng.randrange(1, 200))
                merged_at = c + rng.uniform(0.1, 4) * HOUR
                closed = merged_at + rng.uniform(1, 10) * DAY
                status = "intake"
                if merged_at < now:
                    status = "merged"
                    event(merged_at, "merge", "intake", "merged")
                    if closed < now:
                        status = "closed"
                        event(closed, "close_merged", "merged", "closed")
                    else:
                        closed = None
                else:
                    closed = None
            else:
                dispatched_ids.append(tid)
                lead = by_code[handler] if handler != "street" else streets[(district, street)]
                policy = 1 if rng.random() < 0.7 else 2
                _, _, sign_h, _, reply_n, reply_u, close_n, close_u = POLICIES[policy - 1]
                at = c + rng.uniform(0.02, 0.5) * HOUR
                status = "intake"
                if rng.random() < 0.2:  # no rule fired: the manual queue first
                    event(at, "queue", "intake", "pending_dispatch")
                    status = "pending_dispatch"
                    at += rng.uniform(0.2, 3) * HOUR
                if at >= now:
                    updated = c
                else:
                    event(at, "dispatch", status, "dispatched")
                    status = "dispatched"
                    if rng.random() < 0.08:  # sent to the wrong unit first: 退单 and 改派
                        wrong = rng.choice([u for u in leads if u != lead])
                        back = at + rng.uniform(1, 20) * HOUR
                        again = back + rng.uniform(0.5, 8) * HOUR
                        ended = again if again < now else None
                        assignments.append(
                            (next_assignment, tid, wrong, "lead",
                             "withdrawn" if ended else ("returned" if back < now else
                                                        "dispatched"),
                             policy, None, "system", stamp(at), stamp(at + sign_h * HOUR),
                             stamp(deadlines.add(at, reply_n, reply_u)),
                             stamp(deadlines.add(at, close_n, close_u)), None, None,
                             stamp(ended) if ended else None,
                             rng.choice(RETURN_REASONS) if back < now else None, 0, "sign", 0)
                        )  # fmt: skip
                        next_assignment += 1
                        if back < now:
                            event(back, "return", "dispatched", "returned")
                            status = "returned"
                            returns = 1
                        at = again
                        if again < now:
                            event(again, "redispatch", "returned", "dispatched")
                            status = "dispatched"
                    if status == "dispatched" and at < now:
                        status, updated, closed, satisfaction = _handled(
                            rng, event, assignments, deadlines, next_assignment, tid, lead,
                            policy, at, now, satisfactions,
                        )  # fmt: skip
                        next_assignment += 1
                        if rng.random() < 0.05:  # a co-handling unit
                            co = rng.choice(leads)
                            assignments.append(
                                (next_assignment, tid, co, "co", "signed", policy, None, "op",
                                 stamp(at), stamp(at + sign_h * HOUR),
                                 stamp(deadlines.add(at, reply_n, reply_u)),
                                 stamp(deadlines.add(at, close_n, close_u)),
                                 stamp(min(at + HOUR, now - 1)), None, None, None, 0, None, 0)
                            )  # fmt: skip
                            next_assignment += 1
            updated = max(updated, closed or c)
            tickets.append(
                (tid, f"B{tid:010d}", rng.choice(channels), status, f"市民{tid % 997}", phone,
                 False, f"{district}{street}", district, street, cat_name,
                 rng.choice(TEXTS), rng.choice(request_types), "normal", code, cat_name,
                 satisfaction, parent, returns, 0, stamp(c), stamp(updated),
                 stamp(closed) if closed else None, "op", event.seq)
            )  # fmt: skip
        events_left -= len(events)
        yield tickets, assignments, events

    # escalation warnings (notes) on dispatched tickets until the events reach the target
    notes: list[tuple[Any, ...]] = []
    seqs: dict[int, int] = {}
    while events_left > 0 and dispatched_ids:
        tid = rng.choice(dispatched_ids)
        seqs[tid] = seqs.get(tid, 100) + 1
        at = min(created[tid - 1] + rng.uniform(1, 72) * HOUR, now - 1)
        notes.append((tid, seqs[tid], stamp(at), "system", "note", None, None, "{}"))
        events_left -= 1
        if len(notes) == CHUNK * 5:
            yield [], [], notes
            notes = []
    if notes:
        yield [], [], notes


def _handled(
    rng: random.Random,
    event: _Audit,
    assignments: list[tuple[Any, ...]],
    deadlines: _Deadlines,
    ident: int,
    tid: int,
    unit: int,
    policy: int,
    at: float,
    now: float,
    satisfactions: list[str],
) -> tuple[str, float, float | None, str | None]:
    """The lead unit's handling from ``at`` on, as far as ``now``: appends the assignment
    and the events; returns the ticket's (status, updated, closed, satisfaction)."""
    _, _, sign_h, _, reply_n, reply_u, close_n, close_u = POLICIES[policy - 1]
    sign_due = at + sign_h * HOUR
    reply_due = deadlines.add(at, reply_n, reply_u)
    close_due = deadlines.add(at, close_n, close_u)
    extended = rng.random() < 0.05
    signed = replied = ended = None
    closed = satisfaction = None
    status, a_status, updated = "dispatched", "dispatched", at
    sign_at = at + (rng.uniform(0.1, 20) if rng.random() < 0.9 else rng.uniform(24, 60)) * HOUR
    if sign_at < now:
        signed, status, a_status, updated = sign_at, "signed", "signed", sign_at
        event(sign_at, "sign", "dispatched", "signed")
        if extended:
            reply_due += 72 * HOUR
            close_due += 72 * HOUR
            event(sign_at + HOUR, "note", None, None)
        span = reply_due - sign_at
        reply_at = (
            sign_at + span * rng.uniform(0.1, 0.95)
            if rng.random() < 0.85
            else reply_due + rng.uniform(0.1, 5) * DAY
        )
        if reply_at < now:
            replied, status, a_status, updated = reply_at, "replied", "replied", reply_at
            event(reply_at, "reply", "signed", "replied")
            approve = reply_at + rng.uniform(1, 24) * HOUR
            if approve < now:
                status, updated = "reviewed", approve
                event(approve, "approve_reply", "replied", "reviewed")
                done = approve + rng.uniform(1, 48) * HOUR
                if done < now:
                    status, a_status, updated, closed, ended = (
                        "closed", "completed", done, done, done
                    )  # fmt: skip
                    if rng.random() < 0.8:
                        satisfaction = rng.choice(satisfactions)
                        event(done, "callback", "reviewed", "closed")
                    else:
                        event(done, "close", "reviewed", "closed")
    assignments.append(
        (ident, tid, unit, "lead", a_status, policy, None, "system", stamp(at),
         stamp(sign_due), stamp(reply_due), stamp(close_due),
         stamp(signed) if signed else None, stamp(replied) if replied else None,
         stamp(ended) if ended else None, None, 1 if extended else 0, "sign", 0)
    )  # fmt: skip
    return status, updated, closed, satisfaction


# ---------------------------------------------------------------- loading


def load(engine: Engine, shape: Shape) -> Loaded:
    """Generate and bulk-load the city into a migrated, empty database; ANALYZE after."""
    started = time.perf_counter()
    loaded = Loaded(units={u[1]: u[0] for u in units()})
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        if engine.dialect.name == "postgresql":
            _load_postgres(dbapi, shape, loaded)
        else:
            _load_sqlite(dbapi, shape, loaded)
    finally:
        raw.close()
    loaded.load_s = time.perf_counter() - started
    return loaded


def _count(loaded: Loaded, chunk: tuple[list[tuple[Any, ...]], ...]) -> None:
    loaded.tickets += len(chunk[0])
    loaded.assignments += len(chunk[1])
    loaded.events += len(chunk[2])


def _load_postgres(conn: Any, shape: Shape, loaded: Loaded) -> None:
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for table, (columns, rows) in _reference_rows().items():
            _copy(cur, table, columns, rows)
        for chunk in generate(shape):
            _count(loaded, chunk)
            for table, columns, rows in zip(
                ("ticket", "assignment", "ticket_event"),
                (TICKET_COLUMNS, ASSIGNMENT_COLUMNS, EVENT_COLUMNS),
                chunk,
                strict=True,
            ):
                _copy(cur, table, columns, rows)
        for table in ("unit", "sla_policy", "ticket", "assignment"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    conn.autocommit = False  # the connection goes back to the pool


def _copy(cur: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    with cur.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def _load_sqlite(conn: sqlite3.Connection, shape: Shape, loaded: Loaded) -> None:
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    for table, (columns, rows) in _reference_rows().items():
        _insert(conn, table, columns, rows)
    conn.execute("COMMIT")
    for chunk in generate(shape):
        _count(loaded, chunk)
        conn.execute("BEGIN")
        for table, columns, rows in zip(
            ("ticket", "assignment", "ticket_event"),
            (TICKET_COLUMNS, ASSIGNMENT_COLUMNS, EVENT_COLUMNS),
            chunk,
            strict=True,
        ):
            _insert(conn, table, columns, rows)
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA synchronous = NORMAL")


def _insert(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    if rows:
        marks = ", ".join("?" * len(columns))
        conn.executemany(f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({marks})', rows)


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The last whole calendar month before ``now``, in Beijing time."""
    from dispatch.calendar import DEFAULT_TZ

    local = now.astimezone(DEFAULT_TZ).date().replace(day=1)
    previous = (local - timedelta(days=1)).replace(day=1)
    return _midnight(previous), _midnight(local)


def _midnight(d: date) -> datetime:
    from dispatch.calendar import DEFAULT_TZ

    return datetime(d.year, d.month, d.day, tzinfo=DEFAULT_TZ).astimezone(UTC)
