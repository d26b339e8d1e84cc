"""Who may see a confidential caller, and how names and numbers are masked for the others."""

from __future__ import annotations

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
