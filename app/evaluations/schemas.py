"""Request and response shapes for /evaluations."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=140,
                       description='"name" (latest), "name:3" (version) or "name@alias", as '
                                   "in /classify; resolved once, so every text is scored by "
                                   "the same version.")
    dataset_id: str = Field(min_length=1, max_length=40,
                            description="A dataset with labels (see POST /datasets); its "
                                        "unlabeled rows are skipped and counted.")


class ClassScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int = Field(description="Rows whose gold labels include this label.")


class Confusion(BaseModel):
    labels: list[str]
    matrix: list[list[int]] = Field(description="[gold][predicted] counts, in `labels` order.")


class Majority(BaseModel):
    decision: str | list[str]
    accuracy: float
    macro_f1: float


class Reliability(BaseModel):
    edges: list[float]
    confidence: list[float | None]
    accuracy: list[float | None]
    count: list[int]


class EvaluationOut(BaseModel):
    id: str
    model: str = Field(description="The model name.")
    version: int = Field(description="The version that was scored.")
    ref: str = Field(description="The reference as requested, e.g. `crisis@production`.")
    dataset_id: str
    dataset_name: str
    dataset_sha256: str = Field(description="The dataset's sha256 when it was scored.")
    labels: list[str] = Field(description="The version's labels.")
    multi_label: bool
    n: int = Field(description="Labeled rows scored.")
    skipped_unlabeled: int = Field(description="Rows without a label, not scored.")
    truncated: int = Field(description="Texts cut to the version's max_length.")
    accuracy: float = Field(description="Share of rows answered exactly (multi-label: the "
                                        "whole label set).")
    macro_f1: float = Field(description="Unweighted mean of the per-class F1.")
    micro_f1: float | None = Field(description="Multi-label: F1 pooled over every (row, "
                                               "label) decision; null for single-label.")
    roc_auc: float | None = Field(description="Binary models: ROC-AUC of the first label's "
                                              "score; null otherwise or when a class is "
                                              "absent from the gold labels.")
    ece: float = Field(description="Expected calibration error (15 bins) of the scores.")
    per_class: dict[str, ClassScores]
    confusion: Confusion | None = Field(description="Single-label only.")
    reliability: Reliability | None = Field(description="Single-label only: per confidence "
                                                        "bin, mean confidence and accuracy.")
    majority: Majority | None = Field(description="What always answering the commonest gold "
                                                  "answer scores: the floor to beat.")
    seconds: float = Field(description="Wall time of the scoring.")
    owner: str
    created_at: datetime


class EvaluationList(BaseModel):
    evaluations: list[EvaluationOut] = Field(description="Newest first.")
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")
