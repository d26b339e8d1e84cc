"""What the call services write to the log: the caller's number never in clear."""

from __future__ import annotations

import logging

from tests.telephony.fakes import FakeCall


def test_given_an_answered_call_when_logged_then_the_callers_number_is_masked(
    db, make_services, caplog
):
    services = make_services(None)
    with caplog.at_level(logging.INFO, logger="hotline.calls.services"):
        services.on_answered(FakeCall(call_id="log1@pbx.test", remote_number="13912345678"))
    lines = [r.getMessage() for r in caplog.records if r.name == "hotline.calls.services"]
    assert any("139****5678" in line for line in lines), lines
    assert not any("13912345678" in line for line in lines)
