"""The JSON API, mounted under /api/v1."""
from fastapi import APIRouter

from web.api import calendar, calls, escalations, policies, rules, tickets, units, users, workflow

router = APIRouter()
for module in (tickets, workflow, escalations, units, users, rules, policies, calendar, calls):
    router.include_router(module.router)
router.include_router(calls.tickets_router)
