"""A dataset: an uploaded, validated, immutable list of texts with optional labels."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow
from app.models.owned import Owned, idempotency_unique


class Dataset(Owned, Base):
    __tablename__ = "datasets"
    __table_args__ = (idempotency_unique("datasets"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    rows: Mapped[int] = mapped_column(Integer)
    labeled_rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Distinct labels seen in the rows, so jobs can check an eval set without reading it.
    label_set: Mapped[list[str]] = mapped_column(JSONType, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique per owner
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "rows": self.rows,
                "labeled_rows": self.labeled_rows, "sha256": self.sha256,
                "labels": self.label_set, "owner": self.owner, "created_at": self.created_at}
