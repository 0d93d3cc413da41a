"""One row of a dataset. Stored in the database so every worker can read it (DESIGN.md 9)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType


class DatasetRecord(Base):
    __tablename__ = "dataset_records"

    dataset_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    # None (unlabeled), a label name, or a list of names for multi-label data.
    label: Mapped[str | list[str] | None] = mapped_column(JSONType, nullable=True)
