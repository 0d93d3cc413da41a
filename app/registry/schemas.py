"""Response shapes for /models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.schemas import RunWarningOut
from app.models.base import MAX_INT


class ModelSummary(BaseModel):
    name: str
    latest_version: int | None
    aliases: dict[str, int]
    versions: int = 0
    labels: list[str] = Field(default_factory=list)
    updated_at: datetime | None = None


class ModelList(BaseModel):
    models: list[ModelSummary]


class ServingOut(BaseModel):
    precision: str | None = Field(description="How the ONNX backend serves this version: "
                                  "`fp32` or `int8`; null until an API process compiled it.")
    int8_agreement: float | None = Field(description="Share of the version's held-out texts "
                                         "whose label the int8 graph gives as fp32 does; null "
                                         "when not measured (too few held-out texts).")
    agreement_texts: int | None = Field(description="How many held-out texts that was.")


class VersionSummary(BaseModel):
    version: int
    created_at: datetime
    job_id: str | None
    archived: bool
    labels: list[str]
    student_macro_f1: float | None = None
    teacher_macro_f1: float | None = None
    holdout_agreement: float | None = None
    warnings: list[RunWarningOut] = Field(default_factory=list)
    serving: ServingOut | None = None


class ModelDetail(BaseModel):
    name: str
    latest_version: int | None
    aliases: dict[str, int]
    versions: list[VersionSummary]


class VersionDetail(BaseModel):
    name: str
    version: int
    job_id: str | None
    labels: list[str]
    multi_label: bool
    base_model: str
    files: dict[str, str] = Field(description="artifact file name -> sha256")
    metrics: dict[str, Any]
    warnings: list[RunWarningOut] = Field(
        default_factory=list, description="Degenerate results found at training time; an "
        "alias moves onto this version only with `force`.")
    lineage: dict[str, Any]
    card: str = Field(description="Markdown model card")
    archived: bool
    created_at: datetime
    serving: ServingOut | None = Field(None, description="The ONNX backend's compiled copy "
                                       "(TAILOR_SERVING_BACKEND onnx or auto).")


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1, le=MAX_INT)
    force: bool = Field(False, strict=True, description="Move the alias even though the "
                        "version has warnings (otherwise 409 version_has_warnings).")


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int
