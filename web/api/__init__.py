"""The JSON API, mounted under /api/v1."""
from fastapi import APIRouter

from web.api import calendar, escalations, policies, rules, tickets, units, users, workflow

router = APIRouter()
for module in (tickets, workflow, escalations, units, users, rules, policies, calendar):
    router.include_router(module.router)
