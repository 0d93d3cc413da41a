"""Request and response shapes for /classify."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClassifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=140,
                       description='"name" (latest), "name:3" (version) or "name@alias".')
    texts: list[str] = Field(
        min_length=1, description="Texts to classify, in order. Each must be valid Unicode "
        "(no lone surrogates), without NUL, within the length limit, with "
        "at least one visible character; otherwise 422 `invalid_text` naming `texts[i]`.")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Multi-label: labels at or above it are returned (default 0.5). "
                    "Single-label: a top score below it yields label null (abstain).")
    top_k: int | None = Field(None, ge=1, description="Return only the k highest scores; a "
                              "multi-label `label` then lists only labels among them.")


class ClassifyResult(BaseModel):
    label: str | list[str] | None
    scores: dict[str, float]
    truncated: bool = Field(False, description="The text was cut to the model's max_length.")


class ClassifyOut(BaseModel):
    model: str
    version: int
    results: list[ClassifyResult]
