"""A stored evaluation: one registered version scored on one labeled dataset.

Evaluations are records of what was measured, so they name the version and the dataset by
value (plus the dataset's name and sha256 at the time) and hold no foreign keys: deleting
a dataset or a version leaves the scores it once earned readable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow
from app.models.owned import Owned, idempotency_unique


class Evaluation(Owned, Base):
    __tablename__ = "evaluations"
    __table_args__ = (idempotency_unique("evaluations"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    model_ref: Mapped[str] = mapped_column(String(140))  # as requested: "crisis@production"
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_name: Mapped[str] = mapped_column(String(200))
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JSONType)
    multi_label: Mapped[bool] = mapped_column(Boolean)
    # Labeled rows scored (unlabeled rows of the dataset are skipped and counted apart).
    n: Mapped[int] = mapped_column(Integer)
    skipped_unlabeled: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[int] = mapped_column(Integer)  # texts cut to the version's max_length
    # The headline figures as columns (lists, the dashboard); the rest in `report`.
    accuracy: Mapped[float] = mapped_column(Float)
    macro_f1: Mapped[float] = mapped_column(Float)
    micro_f1: Mapped[float | None] = mapped_column(Float)  # multi-label only
    roc_auc: Mapped[float | None] = mapped_column(Float)  # binary, both classes present
    ece: Mapped[float] = mapped_column(Float)
    # worker.distill.metrics.classification_report: per_class, confusion, reliability, majority.
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seconds: Mapped[float] = mapped_column(Float)  # wall time of the scoring
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # unique per owner
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
