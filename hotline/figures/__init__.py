"""The figures a 12345 centre is judged by (issue 18), defined once.

* ``definitions`` — every ticket and unit figure, one function each, whose docstring says
  what is counted above and below the line and which events and timestamps decide it;
* ``filters`` — ``Filters`` (period, unit with its children, category prefix, district,
  channel), applied the same way to every figure;
* ``compute`` — the figures counted in SQL (``compute``), ``Figure`` with its drill-down
  selects of ticket ids, and ``overdue`` (count and days late on the policy's clock);
* ``units`` — 响应率 / 解决率 / 满意率 per unit, the weighted score (``Weights``, 30/35/35 by
  default), the graded bands (分档) and the rank;
* ``calls`` — 接通率, 15 s / 30 s, average wait and abandonment on hotline.calls.acd_figures;
* ``summary`` / ``summary_read`` — the same counts per day of intake (and unit, category,
  district, channel) in summary tables kept incrementally by a beat task, read by
  ``compute``, ``overdue``, ``unit_rates`` and the board whenever they can answer exactly
  (``summary=False``: always the scan). A month's dashboard at 1,000,000 tickets reads a few
  thousand summary rows instead of the month's tickets, assignments and events.

Indexes the queries rely on (migration 0019; PostgreSQL plans checked with EXPLAIN ANALYZE
at 1,000,000 tickets and 3,000,000 events, bench/analytics.py):

* every figure: the period on ``ix_ticket_created_id (created_at, id)``;
* unit figures: the period's lead assignments, one range of ``ix_assignment_role_started
  (role, started_at, ticket_id, unit_id)`` (a ticket's assignments start after its intake,
  so ``started_at >= start`` bounds them), hash-joined to the period's tickets;
* the audit tests (直接办结, 审核通过, 回访, 改派) and "was dispatched" / the unit filter are
  uncorrelated ``ticket.id IN (SELECT ticket_id ... WHERE action = :a AND at >= :start)``
  (resp. ``assignment.started_at >= :start``): one index-only range of
  ``ix_ticket_event_action_at (action, at, ticket_id)`` (resp. the assignment index above),
  read once and hashed, not probed per ticket; bounded by the period's start because a
  ticket's events and assignments come after its intake. ``compute.tune`` gives the
  transaction the ``work_mem`` that keeps them hashed over a long period (and turns JIT
  off);
* 重复诉求率: the tickets of the window before the period and of the period, read from
  ``ix_ticket_created_caller (created_at, caller_phone, category_code, id)`` alone, sorted
  once by (caller, category, intake) with each one's previous intake (a window function),
  not one probe per ticket (21 s for a month at 1,000,000 tickets on PostgreSQL, 10 s on
  SQLite; now 0.3 and 0.4 s);
* calls: ``ix_call_record_arrived_id (arrived_at, id)``, as hotline.calls.acd_figures.
"""

from hotline.figures.calls import CallFigures, call_figures
from hotline.figures.compute import Figure, Overdue, compute, overdue
from hotline.figures.filters import Filters
from hotline.figures.units import DEFAULT_BANDS, Band, UnitRates, Weights, band_of, unit_rates

__all__ = [
    "DEFAULT_BANDS",
    "Band",
    "CallFigures",
    "Figure",
    "Filters",
    "Overdue",
    "UnitRates",
    "Weights",
    "band_of",
    "call_figures",
    "compute",
    "overdue",
    "unit_rates",
]
