"""Masking a confidential caller's identity in free text and in log lines."""

from __future__ import annotations

import logging

import pytest

from accounts.privacy import MaskingFilter, mask_logs, mask_text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("我的手机13812345678", "我的手机138****5678"),
        ("打 138 1234 5678 或 138-1234-5678", "打 138****5678 或 138****5678"),
        ("+86 13812345678", "138****5678"),
        ("+8613812345678", "138****5678"),
        ("0086-13912345678", "139****5678"),
        ("座机010-62345678", "座机010****5678"),
        ("（0755）2345-6789", "075*****6789"),
        ("(0571)88886666", "057*****6666"),
        ("+86 10 62345678", "010****5678"),
        ("联系电话：88886666", "联系电话：88****66"),
        ("身份证11010119900307123X", "身份证110***********123X"),
        ("身份证号110101199003071234。", "身份证号110***********1234。"),
    ],
)
def test_given_numbers_in_text_when_masked_then_phones_and_id_cards_are_hidden(text, masked):
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "工单20261127-000001已受理",  # a ticket number is not a phone number
        "涉及金额12345678元",  # nor is a bare 8-digit amount
        "订单号138123456789012",  # nor a longer run of digits that contains one
        "Call-ID a13812345678b@pbx",
    ],
)
def test_given_other_numbers_when_masked_then_they_are_left_alone(text):
    assert mask_text(text) == text


def test_given_the_callers_name_when_masked_then_every_occurrence_goes_and_others_stay():
    text = "我叫欧阳娜娜，欧阳娜娜家楼下的王五也停水了"
    assert mask_text(text, names=["欧阳娜娜", None, "张"]) == "我叫欧***，欧***家楼下的王五也停水了"


def test_given_a_handler_with_the_filter_when_a_number_is_logged_then_the_line_is_masked():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    mask_logs([handler])
    mask_logs([handler])  # once is enough
    assert sum(isinstance(f, MaskingFilter) for f in handler.filters) == 1
    logger = logging.getLogger("tests.accounts.privacy")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("call %s from %r: ticket %s", "c1", "sip:+8613812345678@pbx", "T-1")
    finally:
        logger.removeHandler(handler)
    assert records == ["call c1 from 'sip:138****5678@pbx': ticket T-1"]
