"""Request and response shapes for /datasets."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text; must be non-empty after stripping whitespace.")
    label: str | list[str] | None = Field(
        None, description="Optional gold label (or labels, for multi-label data).")


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    records: list[Record] = Field(description="At least one record.")


class DatasetOut(BaseModel):
    id: str
    name: str
    rows: int
    labeled_rows: int
    sha256: str = Field(description="sha256 of the canonical JSONL of the records.")
    labels: list[str] = Field(default_factory=list, description="Distinct labels in the rows.")
    owner: str = Field(description="Id of the API key that uploaded it ('local' with auth off, "
                                   "'admin' for datasets older than ownership).")
    created_at: datetime


class DatasetList(BaseModel):
    datasets: list[DatasetOut]
