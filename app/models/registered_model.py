"""A model name in the registry; its versions are immutable, its aliases movable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.owned import OWNER_LENGTH


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    # Bumped by one UPDATE ... RETURNING under the model's lock (app/registry/service.py),
    # so numbers never collide, in SQLite as in PostgreSQL.
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    # Who holds the name (app/registry/service.py, name_holder): the owner of the job that
    # registered its first version, from then on, even when that job or version is deleted.
    # None until a first version is registered.
    owner: Mapped[str | None] = mapped_column(String(OWNER_LENGTH))
    owner_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
