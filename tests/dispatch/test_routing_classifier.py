"""The learned suggestion: trained on the centre's history, it ranks units for a text."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from sqlmodel import Session

from core import runtime
from core.db import saved_id
from core.errors import InvalidInput
from core.settings import Settings
from dispatch import classifier, routing
from dispatch.models import AssignmentStatus
from tests.conftest import START
from tests.dispatch.escalation_scene import (
    make_assignment,
    make_policy,
    make_ticket,
    make_unit,
    savepoint_factory,
)
from tests.dispatch.rule_support import spec

SUBJECTS = {
    "WATER": ["停水", "自来水发黄", "水压太低", "水管爆了", "水表漏水"],
    "POWER": ["停电", "电压不稳", "电线杆歪了", "变压器响", "电费太高"],
    "MARKET": ["过期食品", "缺斤短两", "假货", "预付卡退不了", "药店卖假药"],
}
SETTINGS = ["我们小区", "楼下", "家里", "村里", "单位旁边", "超市门口"]


def synthetic_history() -> tuple[list[str], list[str]]:
    texts, units = [], []
    for unit, subjects in SUBJECTS.items():
        for subject in subjects:
            for setting in SETTINGS:
                texts.append(f"{setting}{subject}了，好几天了，麻烦赶紧处理一下")
                units.append(unit)
    return texts, units


def test_given_synthetic_history_when_trained_then_new_wording_gets_the_right_unit():
    model = classifier.train(*synthetic_history())
    suggestion = model.suggest("我家从早上就停水了，什么时候来水")
    assert suggestion.unit == "WATER"
    assert 0 < suggestion.confidence <= 1
    assert [u for u, _ in suggestion.alternatives] == sorted(
        {"POWER", "MARKET"}, key=lambda u: -dict(suggestion.alternatives)[u]
    )
    assert classifier.train(*synthetic_history()).suggest("买到的假货").unit == "MARKET"


def test_given_too_little_history_when_trained_then_refused():
    with pytest.raises(InvalidInput, match="too little history"):
        classifier.train(["停水"] * 5, ["WATER"] * 5)


def test_given_saved_model_when_loaded_then_it_suggests_the_same(tmp_path: Path):
    model = classifier.train(*synthetic_history())
    path = tmp_path / "models" / "routing.pkl"
    assert classifier.load(path) is None
    model.save(path)
    loaded = classifier.load(path)
    assert loaded is not None and loaded.units == model.units
    assert loaded.suggest("楼里停电了").to_data() == model.suggest("楼里停电了").to_data()


def test_given_returned_and_kept_tickets_when_history_read_then_only_kept_leads_label(
    session: Session,
):
    policy = make_policy(session)
    water, power = make_unit(session, "WATER"), make_unit(session, "POWER")
    kept = make_assignment(
        session, ticket=make_ticket(session, description="停水了"), unit=water, policy=policy
    )
    kept.status = AssignmentStatus.completed
    returned = make_assignment(
        session, ticket=make_ticket(session, description="停电了"), unit=power, policy=policy
    )
    returned.status = AssignmentStatus.returned
    session.add_all([kept, returned])
    session.flush()
    texts, units = classifier.history(session)
    assert units == ["WATER"]
    assert "停水了" in texts[0]


@pytest.fixture
def installed_model():
    classifier.install(classifier.train(*synthetic_history()))
    yield classifier.installed()
    classifier.install(None)


def test_given_installed_model_when_no_rule_routes_then_the_queue_shows_its_suggestion(
    session: Session, installed_model
):
    ticket = make_ticket(session, description="楼里突然停电了，冰箱都不转了")
    result = routing.dispatch_ticket(session, ticket_id=saved_id(ticket), now=START)
    assert result.queued
    assert result.explanation["fired"] is None
    assert result.explanation["suggestion"]["unit"] == "POWER"
    assert len(result.explanation["suggestion"]["alternatives"]) == 2


def test_given_no_model_installed_when_dispatched_then_no_suggestion(session: Session):
    ticket = make_ticket(session, description="楼里突然停电了")
    result = routing.dispatch_ticket(session, ticket_id=saved_id(ticket), now=START)
    assert "suggestion" not in result.explanation


def test_given_saved_model_when_load_installed_then_it_is_used_and_reread_on_change(
    tmp_path: Path,
):
    path = tmp_path / "routing.pkl"
    try:
        assert classifier.load_installed(path) is None
        classifier.train(*synthetic_history()).save(path)
        first = classifier.load_installed(path)
        assert first is not None and classifier.installed() is first
        assert classifier.load_installed(path) is first
    finally:
        classifier.install(None)


def _kept_history(session: Session, n: int) -> None:
    policy = make_policy(session)
    units = {code: make_unit(session, code) for code in SUBJECTS}
    texts, codes = synthetic_history()
    for text, code in list(zip(texts, codes, strict=True))[:n]:
        kept = make_assignment(
            session, ticket=make_ticket(session, description=text), unit=units[code], policy=policy
        )
        kept.status = AssignmentStatus.replied
        session.add(kept)
    session.flush()


def test_given_history_when_scheduled_training_runs_then_model_saved_and_installed(
    session: Session, tmp_path: Path
):
    from hotline import tasks

    _kept_history(session, n=len(synthetic_history()[0]))
    settings = Settings(environment="test", data_dir=tmp_path)
    runtime.set_runtime(settings=settings, session_factory=savepoint_factory(session))
    try:
        assert tasks.train_router.run() == len(synthetic_history()[0])
        assert (tmp_path / classifier.MODEL_FILE).exists()
        installed = classifier.installed()
        assert installed is not None and installed.suggest("小区停水了").unit == "WATER"
    finally:
        runtime.reset_runtime()
        classifier.install(None)


def test_given_too_little_history_when_scheduled_training_runs_then_nothing_is_saved(
    session: Session, tmp_path: Path
):
    from hotline import tasks

    _kept_history(session, n=3)
    runtime.set_runtime(
        settings=Settings(environment="test", data_dir=tmp_path),
        session_factory=savepoint_factory(session),
    )
    try:
        assert tasks.train_router.run() == 0
        assert not (tmp_path / classifier.MODEL_FILE).exists()
    finally:
        runtime.reset_runtime()


def test_given_rules_when_prior_documents_made_then_each_rule_and_keyword_is_a_document():
    specs = [
        spec("公积金", lead="HOUSING_FUND", text_any=["公积金", "提取"], text_all=["贷款"]),
        spec("停用", lead="WATER", enabled=False, text_any=["停水"]),
        spec("按区", lead="DISTRICT", districts=["榆阳区"]),
    ]
    docs = classifier.prior_documents(specs)
    assert docs == [
        ("公积金 提取 贷款 公积金", "HOUSING_FUND"),
        ("公积金", "HOUSING_FUND"),
        ("提取", "HOUSING_FUND"),
        ("贷款", "HOUSING_FUND"),
    ]


def test_given_prior_documents_when_trained_then_a_unit_without_history_can_be_suggested():
    priors = classifier.prior_documents(
        [spec("公积金", lead="HOUSING_FUND", text_any=["公积金", "公积金提取", "公积金贷款"])]
    )
    without = classifier.train(*synthetic_history())
    assert "HOUSING_FUND" not in without.units
    model = classifier.train(*synthetic_history(), priors)
    assert model.suggest("想问问公积金怎么提取").unit == "HOUSING_FUND"
    assert model.trained_on == len(synthetic_history()[0])  # priors are not history
    assert model.support("WATER") == len(SUBJECTS["WATER"]) * len(SETTINGS)
    assert model.support("HOUSING_FUND") == 0


def test_given_a_watched_model_file_then_installed_loads_it_and_follows_changes(
    tmp_path, monkeypatch
):
    """Every process that dispatches watches the file the worker's training writes."""
    from dispatch import classifier

    monkeypatch.setattr(classifier, "WATCH_EVERY_S", 0.0)
    path = tmp_path / classifier.MODEL_FILE
    classifier.install(None)
    classifier.watch(path)
    try:
        assert classifier.installed() is None  # no file yet
        pairs = [("家里停水了", "WATER"), ("没有水", "WATER"), ("暖气不热", "HEATING")] * 8
        model = classifier.train([t for t, _ in pairs], [u for _, u in pairs])
        path.parent.mkdir(parents=True)
        path.write_bytes(pickle.dumps(model))
        loaded = classifier.installed()
        assert loaded is not None and loaded.suggest("停水好几天") is not None
    finally:
        classifier.watch(None)
        classifier.install(None)
