"""An existing Open311 client from PyPI, unchanged, against the app on a real uvicorn with the
demo city: georeport 0.3.1 (GeoReport v2 over a base URL, XML through xmltodict, JSON).
It lists services, reads a service definition and reads requests back; it cannot create
requests ("does not currently support the creation of new 311 service requests"), so the
POST and the token are sent as the spec's plain form post over HTTP. The other clients on
PyPI (open311 1.1, three 0.8.0) are Python 2 only."""

from __future__ import annotations

import httpx
import pytest
import xmltodict  # type: ignore[import-untyped]
from georeport import GeoReport  # type: ignore[import-untyped]
from sqlmodel import select

from dispatch.models import Assignment, Unit
from hotline.open311 import clients
from tickets.models import Channel, Ticket


@pytest.fixture
def key(site) -> str:
    with site.session_factory() as session:
        _, made = clients.issue(session, name="georeport", actor="admin:test", now=site.clock.now())
        session.commit()
    return made


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_georeport_lists_services_posts_and_reads_the_request_back(site, key, fmt):
    geo = GeoReport(f"{site.url}/open311/v2", jurisdiction="12345", output_format=fmt)

    listed = geo.get_service_list()
    by_code = {s["service_code"]: s for s in listed}
    assert by_code["020402"]["service_name"] == "井盖"
    assert by_code["090301"]["service_name"] == "燃气泄漏"
    assert len(by_code) > 50  # the demo pack's categories
    definition = geo.get_service_definition("020402")
    assert definition["service_code"] == "020402"
    attributes = definition["attributes"]
    if fmt == "xml":
        attributes = attributes["attribute"]
    assert [a["code"] for a in attributes][:2] == ["ADDRESS_DETAIL", "URGENCY"]

    posted = httpx.post(
        f"{site.url}/open311/v2/requests.{fmt}",
        data={
            "jurisdiction_id": "12345",
            "api_key": key,
            "service_code": "020402",
            "lat": "38.2852",
            "long": "109.7345",
            "address_string": "榆阳区人民路与新建路交叉口",
            "description": "路口的井盖不见了，晚上很危险",
            "phone": "13912345678",
            "attribute[URGENCY]": "urgent",
        },
    )
    assert posted.status_code == 201, posted.text
    if fmt == "json":
        made = posted.json()[0]
    else:
        made = xmltodict.parse(posted.content)["service_requests"]["request"]
    number, token = made["service_request_id"], made["token"]
    resolved = httpx.get(f"{site.url}/open311/v2/tokens/{token}.json").json()
    assert resolved == [{"service_request_id": number, "token": token}]

    read = geo.get_service_request(number)
    assert read["service_request_id"] == number
    assert read["status"] == "open"
    assert read["service_code"] == "020402"
    with site.session_factory() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        assert ticket.channel == Channel.open311
        lead = session.exec(select(Assignment).where(Assignment.ticket_id == ticket.id)).one()
        unit = session.get(Unit, lead.unit_id)
        assert unit is not None
        assert read["agency_responsible"] == unit.name
    assert "13912345678" not in str(read)

    found = geo.get_service_requests(service_request_id=number)
    found = found if isinstance(found, list) else [found]
    assert [r["service_request_id"] for r in found] == [number]
    recent = geo.get_service_requests(service_code="020402", status="open")
    recent = recent if isinstance(recent, list) else [recent]
    assert number in [r["service_request_id"] for r in recent]
