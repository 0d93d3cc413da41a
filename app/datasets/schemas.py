"""Request and response shapes for /datasets."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.datasets.parsing import DatasetHead


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text: valid Unicode with a visible character, no NUL, "
                                  "at most TAILOR_MAX_TEXT_CHARS characters.")
    label: str | int | list[str | int] | None = Field(
        None, description="Optional gold label (or labels, for multi-label data); integers "
                          "are stored as their decimal string.")


class DatasetCreate(DatasetHead):
    """The JSON upload. `text_column` / `label_column` rename the record fields."""

    records: list[Record] = Field(description="At least one record.")


class UploadWarning(BaseModel):
    code: str
    message: str
    columns: list[str] = Field(default_factory=list)


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
    warnings: list[UploadWarning] = Field(
        default_factory=list, description="What the upload ignored, e.g. `ignored_columns`.")


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


__all__ = ["DatasetCreate", "DatasetList", "DatasetOut", "Record", "UploadWarning"]
