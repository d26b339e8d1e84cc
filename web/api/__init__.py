"""The JSON API, mounted under /api/v1.

The routers are included into the app one by one rather than through one parent router:
FastAPI (0.16x) walks the tree of included routers on every request to see whether it
changed, so each level of nesting costs every request a little (bench/pipeline.py)."""

from fastapi import APIRouter

from web.api import calendar, calls, escalations, policies, rules, tickets, units, users, workflow

PREFIX = "/api/v1"
ROUTERS: tuple[APIRouter, ...] = (
    tickets.router,
    workflow.router,
    escalations.router,
    units.router,
    users.router,
    rules.router,
    policies.router,
    calendar.router,
    calls.router,
    calls.tickets_router,
)
