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


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1, le=MAX_INT)
    force: bool = Field(False, strict=True, description="Move the alias even though the "
                        "version has warnings (otherwise 409 version_has_warnings).")


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int
