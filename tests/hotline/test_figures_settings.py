"""The admin's unit-rate settings (hotline.figures.settings): defaults when none are
stored, a change stored and audited with the old and new values, and every bad value
refused with the field named and nothing written — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import AuditEntry
from core.errors import InvalidInput
from hotline.figures import settings
from hotline.figures.models import FigureSetting
from hotline.figures.units import DEFAULT_BANDS, Band, Weights
from tests.hotline.figures_fixtures import NOW

GOOD = {
    "weights": {"response": 20, "resolution": 40, "satisfaction": 40},
    "bands": [
        {"name": "A", "at_least": 85},
        {"name": "B", "at_least": 70},
        {"name": "C", "at_least": 0},
    ],
}


def test_given_nothing_stored_then_the_defaults_apply(session: Session) -> None:
    chosen = settings.load(session)
    assert chosen.weights == Weights(30, 35, 35)
    assert chosen.bands == DEFAULT_BANDS


def test_given_good_settings_when_saved_then_loaded_back_and_audited(session: Session) -> None:
    saved = settings.save(session, value=GOOD, now=NOW, user_id=None, username="boss")
    assert saved.weights == Weights(20, 40, 40)
    assert settings.load(session).bands == (Band("A", 85), Band("B", 70), Band("C", 0))
    settings.save(
        session,
        value={**GOOD, "weights": {"response": 50, "resolution": 25, "satisfaction": 25}},
        now=NOW,
        user_id=None,
    )
    assert settings.load(session).weights == Weights(50, 25, 25)
    entries = session.scalars(
        select(AuditEntry)
        .where(col(AuditEntry.action) == "figures.settings")
        .order_by(col(AuditEntry.id))
    ).all()
    assert len(entries) == 2
    assert entries[0].detail is not None and entries[1].detail is not None
    assert entries[0].username == "boss"
    assert entries[0].detail["before"]["weights"] == {
        "response": 30,
        "resolution": 35,
        "satisfaction": 35,
    }
    assert entries[1].detail["before"]["weights"]["response"] == 20
    assert entries[1].detail["after"]["weights"]["response"] == 50


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weights": {"response": 30, "resolution": 35, "satisfaction": 36}}, "weights"),
        ({"weights": {"response": -5, "resolution": 70, "satisfaction": 35}}, "weights.response"),
        ({"weights": {"response": 101, "resolution": 0, "satisfaction": 0}}, "weights.response"),
        ({"weights": {"response": "x", "resolution": 35, "satisfaction": 35}}, "weights.response"),
        ({"weights": {"response": 30, "resolution": 35}}, "weights.satisfaction"),
        ({"bands": []}, "bands"),
        (
            {
                "bands": [
                    {"name": "A", "at_least": 50},
                    {"name": "B", "at_least": 60},
                    {"name": "C", "at_least": 0},
                ]
            },
            "bands.1.at_least",
        ),
        (
            {"bands": [{"name": "A", "at_least": 50}, {"name": "B", "at_least": 10}]},
            "bands.1.at_least",
        ),
        ({"bands": [{"name": "", "at_least": 0}]}, "bands.0.name"),
        ({"bands": [{"name": "A", "at_least": 50}, {"name": "A", "at_least": 0}]}, "bands.1.name"),
        (
            {"bands": [{"name": "A", "at_least": "nan"}, {"name": "B", "at_least": 0}]},
            "bands.0.at_least",
        ),
        (
            {"bands": [{"name": "A", "at_least": 120}, {"name": "B", "at_least": 0}]},
            "bands.0.at_least",
        ),
    ],
)
def test_given_bad_settings_when_saved_then_refused_naming_the_field_and_nothing_written(
    session: Session, change: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        settings.save(session, value={**GOOD, **change}, now=NOW, user_id=None)
    assert refused.value.details["field"] == field
    assert session.get(FigureSetting, settings.KEY) is None
    assert settings.load(session) == settings.DEFAULTS
