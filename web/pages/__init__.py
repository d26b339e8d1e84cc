"""The pages people work in: server-rendered Jinja2 (``web/templates``), htmx for partial
updates, sign-in with server-side sessions (``web.pages.people``), Chinese and English
(``web.pages.i18n``)."""

from __future__ import annotations

from fastapi import FastAPI

from web.pages import admin, console, home, inbox, nav, people, queues, signin, ticket

# Each workspace is a module with a `router` (and its navigation entries, web.pages.nav).
ROUTERS = (
    signin.router,
    nav.router,
    home.router,
    console.router,
    ticket.router,
    inbox.router,
    queues.router,
    admin.router,
)


def install(app: FastAPI) -> None:
    people.install(app)
    for router in ROUTERS:
        app.include_router(router)
