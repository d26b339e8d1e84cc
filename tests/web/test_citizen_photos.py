"""The photos a citizen sent with a web request, on the ticket page (hotline.citizen_photos):
a request no rule routes waits for a dispatcher with its photos in the file store only — the
dispatcher sees them before deciding, the unit it then goes to sees them too, a unit it
never went to is told they do not exist. Both backends."""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts.models import User
from accounts.signin import set_password
from core.clock import FrozenClock
from core.settings import Settings
from dispatch import routing
from hotline import attachments, public
from tests.web.test_pages_signin import PASSWORD, sign_in
from web.app import create_app

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SECRET = "test-secret-for-lookup-codes-0123456789"
ODD = public.PublicRequest(
    category=public.OTHER,
    description="想咨询一下别的事情，照片是门口的样子",
    address="榆阳区幸福小区3号楼",
    phone="13800001234",
)


@pytest.fixture
def app(session_factory, clock: FrozenClock, tmp_path):
    return create_app(
        settings=Settings(environment="test", data_dir=tmp_path),
        session_factory=session_factory,
        clock=clock,
    )


@pytest.fixture
def waiting(app, session, world, clock):
    """A web request with two photos that no rule routes: it waits for a dispatcher."""
    for username in ("dispatcher", "water.handler", "hrss.handler"):
        user = session.scalars(select(User).where(col(User.username) == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    settings = app.state.settings
    done = public.submit_request(
        session,
        request=ODD,
        photos=[attachments.Upload("门口.png", PNG), attachments.Upload("楼道.png", PNG + b"2")],
        store=attachments.store_for(settings),
        limits=public.photo_limits(attachments.Limits.of(settings), 1024 * 1024),
        secret=SECRET,
        now=clock.now(),
        idempotency_key="form-photos-0001",
        tz=settings.tz,
    )
    session.commit()
    assert done.ticket.status.value == "pending_dispatch"
    return done.ticket


def _photo_links(html: str) -> list[str]:
    block = re.search(r'id="citizen-photos">(.*?)</dd>', html, re.S)
    assert block, "no photos on the page"
    return re.findall(r'<img src="([^"]+)"', block.group(1))


def test_the_dispatcher_sees_the_photos_before_dispatch_and_the_unit_after(
    client, session, world, clock, waiting
) -> None:
    sign_in(client, "dispatcher")
    page = client.get(f"/tickets/{waiting.id}")
    assert page.status_code == 200
    links = _photo_links(page.text)
    assert links == [f"/tickets/{waiting.id}/photos/0", f"/tickets/{waiting.id}/photos/1"]
    first = client.get(links[0])
    assert first.status_code == 200 and first.content == PNG
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert client.get(links[1]).content == PNG + b"2"
    assert client.get(f"/tickets/{waiting.id}/photos/2").status_code == 404

    sign_in(client, "water.handler")
    assert client.get(links[0]).status_code == 404  # not their ticket (yet)

    dispatcher = session.scalars(select(User).where(col(User.username) == "dispatcher")).one()
    routing.manual_dispatch(
        session, ticket_id=waiting.id, lead_unit_code="WATER", now=clock.now(), actor=dispatcher
    )
    session.commit()
    assert client.get(links[0]).content == PNG  # now it is
    assert _photo_links(client.get(f"/tickets/{waiting.id}").text) == links
    sign_in(client, "hrss.handler")
    assert client.get(links[0]).status_code == 404  # never theirs


def test_a_photo_whose_file_is_gone_is_missing_not_an_error(client, app, waiting) -> None:
    sign_in(client, "dispatcher")
    for path in (app.state.settings.data_dir / "attachments").rglob("*"):
        if path.is_file():
            path.unlink()
    assert client.get(f"/tickets/{waiting.id}/photos/0").status_code == 404
    assert client.get(f"/tickets/{waiting.id}").status_code == 200


def test_a_request_dispatched_at_once_shows_its_photos_from_the_units_files(
    client, session, world, clock, app
) -> None:
    user = session.scalars(select(User).where(col(User.username) == "dispatcher")).one()
    set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    settings = app.state.settings
    water = dataclasses.replace(ODD, category="090104", description="幸福小区停水三天了")
    done = public.submit_request(
        session, request=water, photos=[attachments.Upload("水表.png", PNG)],
        store=attachments.store_for(settings),
        limits=public.photo_limits(attachments.Limits.of(settings), 1024 * 1024),
        secret=SECRET, now=clock.now(), idempotency_key="form-photos-0002", tz=settings.tz,
    )  # fmt: skip
    session.commit()
    sign_in(client, "dispatcher")
    links = _photo_links(client.get(f"/tickets/{done.ticket.id}").text)
    assert len(links) == 1 and links[0].startswith("/attachments/")
    assert client.get(links[0]).content == PNG
