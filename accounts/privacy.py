"""Who may see a confidential caller, and how names, phone numbers and ID-card numbers are
masked for the others — in a ticket's fields, in its free text (the description is often the
call's transcript) and in log lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from accounts.models import CENTRE_ROLES, User


def sees_caller_identity(user: User) -> bool:
    """A confidential caller's name and phone are for the centre's eyes only."""
    return user.role in CENTRE_ROLES


def mask_phone(phone: str) -> str:
    """13812345678 → 138****5678 (a country code is dropped); a shorter number keeps a
    quarter of its digits at each end."""
    digits = "".join(c for c in phone if c.isdigit())[-11:]
    head, tail = (3, 4) if len(digits) >= 11 else (len(digits) // 4, len(digits) // 4)
    return digits[:head] + "*" * (len(digits) - head - tail) + digits[len(digits) - tail :]


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***: only the first character stays."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else "*"


def mask_id_card(number: str) -> str:
    """110101199003071234 → 110***********1234: the birth date and the place go."""
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


# No letter or digit may touch a number on either side: 13812345678 inside a longer run of
# digits (an order number, a Call-ID) is not a phone number.
_EDGE_L, _EDGE_R = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"
_SEP = r"[ \-]?"
# 18-digit resident ID card (居民身份证), the last character a digit or X.
_ID_CARD = re.compile(_EDGE_L + r"[1-9]\d{16}[0-9Xx]" + _EDGE_R)
# Mobile numbers (1[3-9]x xxxx xxxx, grouped or not) with an optional +86/0086/86 prefix.
_MOBILE = re.compile(
    _EDGE_L
    + r"(?:(?:\+|00)?86"
    + _SEP
    + r")?1[3-9]\d"
    + _SEP
    + r"\d{4}"
    + _SEP
    + r"\d{4}"
    + _EDGE_R
)
# Landlines with their area code: 010-12345678, (0571)8888 6666, +86 10 12345678.
_LANDLINE = re.compile(
    _EDGE_L
    + r"(?:(?:(?:\+|00)?86"
    + _SEP
    + r"\(?0?[1-9]\d{1,2}\)?)|(?:[(（]0[1-9]\d{1,2}[)）])"
    + r"|(?:0[1-9]\d{1,2}))"
    + _SEP
    + r"[2-9]\d{2,3}"
    + _SEP
    + r"\d{4}"
    + _EDGE_R
)
# A bare 7- or 8-digit local number only counts after a word that says it is one.
_LOCAL = re.compile(
    r"((?:电话|手机|座机|号码|联系方式|来电|tel|phone)[^0-9A-Za-z\n]{0,6})"
    r"(\d{3,4}" + _SEP + r"\d{4})" + _EDGE_R,
    re.IGNORECASE,
)


def _mask_landline(number: str) -> str:
    """+86 10 6234 5678 → 010****5678: the national form, area code kept, last four kept."""
    digits = "".join(c for c in number if c.isdigit())
    if number.lstrip().startswith(("+", "00", "86")):
        digits = digits.removeprefix("00").removeprefix("86")
    digits = digits if digits.startswith("0") else "0" + digits
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_text(text: str, *, names: Iterable[str | None] = ()) -> str:
    """Free text with every ID-card number, mobile or landline number (with or without +86)
    and each of `names` masked, the way the fields are: 138****5678, 110***********1234, 张*.
    A one-character name is left alone: masking it would garble the text."""
    text = _ID_CARD.sub(lambda m: mask_id_card(m.group()), text)
    text = _MOBILE.sub(lambda m: mask_phone(m.group()), text)
    text = _LANDLINE.sub(lambda m: _mask_landline(m.group()), text)
    text = _LOCAL.sub(lambda m: m.group(1) + mask_phone(m.group(2)), text)
    for name in sorted(
        {n.strip() for n in names if n and len(n.strip()) > 1}, key=len, reverse=True
    ):
        text = text.replace(name, mask_name(name))
    return text


class MaskingFilter(logging.Filter):
    """Masks phone and ID-card numbers in every record it sees. Put it on a handler, so it
    covers the records of every logger the handler serves (SIP lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_logs(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Add a MaskingFilter to `handlers` (by default the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
