"""One immutable, registered student: where its files are, their checksums, its metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_versions_name_v"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("registered_models.name", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    artifact_path: Mapped[str] = mapped_column(String(500))  # relative to the artifact store
    files: Mapped[dict[str, str]] = mapped_column(JSONType)  # file name -> sha256
    base_model: Mapped[str] = mapped_column(String(500))
    labels: Mapped[list[str]] = mapped_column(JSONType)
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # `[{"code", "message"}]` from the engine (worker/distill/warnings.py): results that
    # should not be trusted as they stand; an alias moves onto a warned version only by force.
    warnings: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list,
                                                           server_default=text("'[]'"))
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    card: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when an API process compiles the version for the ONNX backend (app/serving/
    # compiled.py): "fp32" or "int8", the int8 graph's label agreement with fp32 on the
    # version's held-out texts and how many texts that was (null: not measured).
    serving_precision: Mapped[str | None] = mapped_column(String(8), nullable=True)
    int8_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    int8_agreement_texts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.version}"
