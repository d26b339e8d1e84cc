"""Every table, imported in one place for Alembic and create_all."""

from sqlmodel import SQLModel

import accounts.models  # noqa: F401
import dispatch.models  # noqa: F401
import hotline.figures.models
import hotline.knowledge.models
import hotline.open311.models  # noqa: F401
import telephony.models  # noqa: F401
import tickets.models  # noqa: F401

metadata = SQLModel.metadata
