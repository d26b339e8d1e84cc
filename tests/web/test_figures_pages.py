"""The figures' pages (web/pages/figures.py) with the ASGI client on the hand-made city of
tests/hotline/figures_fixtures.py: who may open which page, a handler who sees only their
own unit in the pages and in every export, the drill-down list that equals its figure's
count, the exports carrying the page's filters, bad filters answered 422 naming the field,
and the admin's weights and bands."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, Role, User
from accounts.service import create_user
from accounts.signin import set_password
from hotline.figures import Filters, compute, unit_rates
from hotline.figures import settings as rate_settings
from tests.hotline.figures_fixtures import END, NOW, START, build_city
from tests.web.test_pages_signin import PASSWORD, _csrf, sign_in

PERIOD = "from=2026-12-01&to=2026-12-07"


@pytest.fixture
def city(session, world, clock):
    clock.set(NOW)
    built = build_city(session)
    for username in ("supervisor", "dispatcher", "operator", "admin"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=NOW)
    for name, unit in (("street.handler", "STREET"), ("other.handler", "OTHER")):
        user, _token = create_user(
            session, username=name, display_name=f"{unit} 联络员", role=Role.handler,
            unit_id=built.units[unit], now=NOW,
        )  # fmt: skip
        set_password(session, user_id=user.id, password=PASSWORD, now=NOW)
    session.commit()
    return built


def _rows(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_the_centre_roles_open_the_dashboard_and_others_do_not(client, city) -> None:
    sign_in(client, "operator")
    assert client.get(f"/figures?{PERIOD}").status_code == 403
    sign_in(client, "street.handler")
    assert client.get(f"/figures?{PERIOD}").status_code == 403
    assert client.get(f"/figures/units?{PERIOD}").status_code == 403
    assert client.get(f"/figures/hotspots?{PERIOD}").status_code == 403
    assert client.get("/figures/export/calls.csv").status_code == 404
    for who in ("supervisor", "dispatcher", "admin"):
        sign_in(client, who)
        page = client.get(f"/figures?{PERIOD}")
        assert page.status_code == 200, who
        assert 'href="/figures"' in page.text  # in the top bar
    assert client.get("/figures/unit").status_code == 403  # a handler's page


def test_the_dashboard_cards_carry_computes_counts_and_link_to_their_tickets(
    client, city, session
) -> None:
    sign_in(client, "supervisor")
    page = client.get(f"/figures?{PERIOD}").text
    truth = compute(session, filters=Filters(start=START, end=END), now=NOW)
    for name in ("direct_answer_rate", "on_time_sign_rate", "dispatch_accuracy"):
        f = truth[name]
        assert (
            f'data-figure="{name}" data-numerator="{f.numerator}" '
            f'data-denominator="{f.denominator}"' in page
        )
    assert "/figures/tickets?from=2026-12-01&amp;to=2026-12-07&amp;figure=merge_rate" in page
    assert 'id="chart-volume_day"' in page and 'id="fig-data"' in page
    for name, figure in truth.items():
        listed = client.get(f"/figures/tickets?{PERIOD}&figure={name}&part=numerator")
        assert listed.status_code == 200
        total = int(listed.text.split('data-total="')[1].split('"')[0])
        distinct = len(set(session.scalars(figure.numerator_ids)))
        assert total == distinct, name
        if name in ("direct_answer_rate", "on_time_sign_rate", "merge_rate", "dispatch_accuracy"):
            assert total == figure.numerator, name
    merged = client.get(f"/figures/tickets?{PERIOD}&figure=merge_rate&part=numerator").text
    assert merged.count("data-ticket=") == 1 and f'data-ticket="{city.tickets["t5"]}"' in merged


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-13-01", "from"),
        ("from=2026-12-07&to=2026-12-01", "to"),
        ("from=2026-01-01&to=2026-12-01", "to"),
        ("unit=NOWHERE", "unit"),
        ("category=02x", "category"),
        ("channel=pigeon", "channel"),
    ],
)
def test_bad_filters_are_answered_422_naming_the_field(client, city, query, field) -> None:
    sign_in(client, "supervisor")
    page = client.get(f"/figures?{query}")
    assert page.status_code == 422
    assert f'data-field="{field}"' in page.text
    exported = client.get(f"/figures/export/figures.csv?{query}")
    assert exported.status_code == 422 and exported.text.startswith(field)


def test_bad_drill_down_and_hot_spot_parameters_are_422(client, city) -> None:
    sign_in(client, "supervisor")
    assert client.get(f"/figures/tickets?{PERIOD}&figure=nope").status_code == 422
    bad_part = client.get(f"/figures/tickets?{PERIOD}&figure=merge_rate&part=half")
    assert bad_part.status_code == 422 and 'data-field="part"' in bad_part.text
    assert client.get(f"/figures/hotspots?{PERIOD}&minimum=0").status_code == 422
    assert client.get(f"/figures/hotspots?{PERIOD}&by=street").status_code == 422
    assert client.get(f"/figures/export/tickets.csv?{PERIOD}&figure=x").status_code == 422
    assert client.get(f"/figures/export/figures.pdf?{PERIOD}").status_code == 422


def test_a_handler_sees_only_their_own_unit_in_pages_and_exports(client, city, session) -> None:
    sign_in(client, "street.handler")
    page = client.get(f"/figures/unit?{PERIOD}")
    assert page.status_code == 200
    assert "STREET" in page.text
    for other in ("OTHER", "CITY"):
        assert other not in page.text
    asked = client.get(f"/figures/unit?{PERIOD}&unit=OTHER")  # asking for another: ignored
    cards = page.text.split('id="fig-cards"')[1].split("</div>")[0]
    assert cards in asked.text
    own = Filters(start=START, end=END, unit_id=city.units["STREET"])
    truth = compute(session, filters=own, now=NOW)
    # t3 only: signed an hour late
    assert 'data-figure="on_time_sign_rate" data-numerator="0" data-denominator="1"' in page.text
    assert truth["on_time_sign_rate"].denominator == 1
    band = next(
        u for u in unit_rates(session, filters=own, now=NOW) if u.unit_id == city.units["STREET"]
    )
    assert f'data-band="{band.band}"' in page.text
    for table in ("figures", "units", "sla", "volume_day", "categories", "districts"):
        for fmt in ("csv", "xlsx"):
            got = client.get(f"/figures/export/{table}.{fmt}?{PERIOD}&unit=OTHER")
            assert got.status_code == 200, (table, fmt)
            if fmt == "csv":
                text = got.content.decode("utf-8")
            else:
                book = load_workbook(io.BytesIO(got.content), read_only=True)
                text = "\n".join(
                    str(v) for row in book.worksheets[0].iter_rows(values_only=True) for v in row
                )
            assert "OTHER" not in text and "CITY" not in text, (table, fmt)
    units = _rows(client.get(f"/figures/export/units.csv?{PERIOD}").content.decode())
    assert [r[2] for r in units[1:]] == ["STREET"]
    districts = _rows(client.get(f"/figures/export/districts.csv?{PERIOD}").content.decode())
    assert districts[1:] == [["郊区", "1"]]  # t3 alone
    # the tickets behind a figure: only the unit's
    listed = client.get(f"/figures/tickets?{PERIOD}&figure=completion_rate&part=denominator")
    assert listed.status_code == 200 and listed.text.count("data-ticket=") == 1
    drilled = _rows(client.get(
        f"/figures/export/tickets.csv?{PERIOD}&figure=completion_rate&part=denominator"
    ).content.decode())  # fmt: skip
    assert len(drilled) == 2
    for centre_only in ("calls", "hotspots", "matrix", "rising", "located"):
        assert client.get(f"/figures/export/{centre_only}.csv?{PERIOD}").status_code == 404


def test_every_table_downloads_as_csv_and_xlsx_with_the_filters(client, city, session) -> None:
    sign_in(client, "supervisor")
    query = f"{PERIOD}&district=城区"
    for table in ("figures", "units", "sla", "volume_day", "volume_hour", "categories",
                  "districts", "calls", "hotspots", "matrix", "rising", "located"):  # fmt: skip
        got = client.get(f"/figures/export/{table}.csv?{query}")
        assert got.status_code == 200 and got.content.startswith(b"\xef\xbb\xbf"), table
        assert got.headers["content-type"].startswith("text/csv")
        assert "attachment" in got.headers["content-disposition"]
        book = client.get(f"/figures/export/{table}.xlsx?{query}")
        assert book.status_code == 200, table
        opened = load_workbook(io.BytesIO(book.content), read_only=True)
        assert opened.sheetnames[1] == "口径／Definitions"
        first = list(opened.worksheets[0].iter_rows(values_only=True))
        assert ("区县", "城区") in [tuple(r[:2]) for r in first[:9]], table
    truth = compute(session, filters=Filters(start=START, end=END, district="城区"), now=NOW)
    rows = _rows(client.get(f"/figures/export/figures.csv?{query}").content.decode())
    got = {r[0]: (int(r[2]), int(r[3])) for r in rows[1:]}
    assert got["direct_answer_rate"] == (
        truth["direct_answer_rate"].numerator,
        truth["direct_answer_rate"].denominator,
    )


def test_the_admin_sets_weights_and_bands_and_bad_input_names_the_field(
    client, city, session
) -> None:
    sign_in(client, "admin")
    form = client.get("/admin/figures")
    assert form.status_code == 200 and 'value="30"' in form.text
    csrf = _csrf(form.text)
    good = {
        "csrf_token": csrf,
        "weights.response": "20", "weights.resolution": "40", "weights.satisfaction": "40",
        "bands.0.name": "A", "bands.0.at_least": "85",
        "bands.1.name": "B", "bands.1.at_least": "0",
    }  # fmt: skip
    saved = client.post("/admin/figures", data=good, follow_redirects=False)
    assert saved.status_code == 303
    session.expire_all()
    chosen = rate_settings.load(session)
    assert (chosen.weights.response, [b.name for b in chosen.bands]) == (20, ["A", "B"])
    bad = client.post("/admin/figures", data={**good, "weights.response": "21"})
    assert bad.status_code == 422 and 'id="err-weights"' in bad.text
    assert 'value="21"' in bad.text  # what was typed is kept
    bad = client.post("/admin/figures", data={**good, "bands.1.at_least": "90"})
    assert bad.status_code == 422 and 'id="err-bands-1-at_least"' in bad.text
    session.expire_all()
    assert rate_settings.load(session).weights.response == 20
    audit = session.scalars(
        select(AuditEntry).where(col(AuditEntry.action) == "figures.settings")
    ).all()
    assert len(audit) == 1 and audit[0].username == "admin"
    sign_in(client, "supervisor")
    assert client.get("/admin/figures").status_code == 403
    ranking = client.get(f"/figures/units?{PERIOD}").text
    assert "A ≥ 85" in ranking and 'data-unit="' in ranking
