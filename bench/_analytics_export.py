"""The CSV export bench/analytics.py times: a year of tickets streamed from the database
to a file. hotline.figures.export is used when it exists (``export_via_figures``: the
figures page's own export of the tickets behind a figure); else, or when asked, this
module's ``export_csv``: one ``SELECT`` over ``ix_ticket_created_id`` read through a server-side
cursor (``yield_per``: PostgreSQL fetches 5,000 rows at a time, SQLite steps its cursor)
into ``csv.writer``, so memory stays flat however many rows there are.

Run as a program it exports in a fresh process and prints one JSON line with the rows,
bytes, seconds and the process's resident memory before the export and at its peak
(``VmHWM``), so the growth is the export's own:

    python bench/_analytics_export.py URL START END OUT [auto|bench]
"""

from __future__ import annotations

import csv
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select
from sqlalchemy.engine import Engine

from core.db import make_engine, table_of
from dispatch.calendar import DEFAULT_TZ
from tickets.models import Ticket

T = table_of(Ticket)
COLUMNS = (
    "number", "created_at", "channel", "status", "request_type", "district", "street",
    "category_code", "category_name", "title", "caller_phone", "satisfaction",
    "return_count", "closed_at",
)  # fmt: skip
YIELD_PER = 5_000


def export_csv(engine: Engine, start: datetime, end: datetime, out: Any) -> int:
    """Tickets taken in within [start, end), oldest first, as CSV rows (times in Beijing
    time) written to ``out``; returns the rows written."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    query = (
        select(*(T.c[name] for name in COLUMNS))
        .where(T.c.created_at >= start, T.c.created_at < end)
        .order_by(T.c.created_at, T.c.id)
    )
    written = 0
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=YIELD_PER).execute(query)
        for rows in result.partitions():
            writer.writerows(
                (
                    r[0],
                    r[1].astimezone(DEFAULT_TZ).strftime("%Y-%m-%d %H:%M:%S"),
                    *r[2:13],
                    r[13].astimezone(DEFAULT_TZ).strftime("%Y-%m-%d %H:%M:%S") if r[13] else "",
                )
                for r in rows
            )
            written += len(rows)
    return written


def export_via_figures(engine: Engine, start: datetime, end: datetime, out: Any) -> int | None:
    """The same year through hotline.figures.export, as the figures page exports it: the
    tickets behind 直接答复率's denominator (every ticket taken in within the period),
    ``build(..., "tickets", ...)`` written by ``csv_lines``. None when that module (being
    written alongside this benchmark) is not there or has another shape."""
    try:
        from hotline.figures import export
        from hotline.figures.board import Ask
        from hotline.figures.settings import DEFAULTS
    except ImportError:
        return None
    from core.db import make_session_factory
    from hotline.figures import Filters

    with make_session_factory(engine)() as session:
        ask = Ask(filters=Filters(start=start, end=end), now=end, tz=DEFAULT_TZ)
        params = {"figure": "direct_answer_rate", "part": "denominator"}
        table = export.build(session, "tickets", ask, DEFAULTS, params)
        lines = 0
        for line in export.csv_lines(table.columns, table.rows):
            out.write(line)
            lines += 1
    return lines - 1


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    url, start, end, out = sys.argv[1:5]
    mode = sys.argv[5] if len(sys.argv) > 5 else "auto"  # "bench": this module's own
    engine = make_engine(url)
    with engine.connect():
        pass  # connected (and the driver loaded) before the baseline reading
    before = _memory_kib("VmRSS")
    started = time.perf_counter()
    period = datetime.fromisoformat(start), datetime.fromisoformat(end)
    with open(out, "w", newline="", encoding="utf-8") as f:
        via = "hotline.figures.export"
        rows = export_via_figures(engine, *period, f) if mode != "bench" else None
        if rows is None:
            via = "bench._analytics_export.export_csv"
            rows = export_csv(engine, *period, f)
    seconds = time.perf_counter() - started
    engine.dispose()
    print(
        json.dumps(
            {
                "rows": rows,
                "via": via,
                "bytes": Path(out).stat().st_size,
                "seconds": round(seconds, 3),
                "rss_before_mib": round(before / 1024, 1),
                "rss_peak_mib": round(_memory_kib("VmHWM") / 1024, 1),
                "rss_growth_mib": round((_memory_kib("VmHWM") - before) / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
