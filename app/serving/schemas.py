"""Request and response shapes for /classify and /models/{ref}/predict."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


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
    explain: bool = Field(False, description="Also return, per text, each token's attribution "
                          "to the top label (integrated gradients). At most "
                          "TAILOR_MAX_EXPLAIN_TEXTS texts (default 8); more is a 422 "
                          "`too_many_to_explain` naming `texts`.")


class TokenAttribution(BaseModel):
    token: str = Field(description="The tokenizer's token, e.g. `##quake`.")
    start: int = Field(description="Character offset of the token in the text sent.")
    end: int = Field(description="End offset (exclusive): `text[start:end]` is the token.")
    attribution: float = Field(description="Contribution to the label's calibrated "
                               "probability; positive supports the label.")


class Explanation(BaseModel):
    label: str = Field(description="The label explained: the top-scoring one.")
    method: str = Field(description="`integrated_gradients` (captum).")
    convergence_delta: float = Field(description="|sum of attributions - (score(text) - "
                                     "score(baseline))|: small means a faithful sum.")
    tokens: list[TokenAttribution] = Field(description="The text's tokens in order, special "
                                           "tokens left out; cut at the model's max_length.")


class ClassifyResult(BaseModel):
    label: str | list[str] | None
    scores: dict[str, float]
    truncated: bool = Field(False, description="The text was cut to the model's max_length.")
    explanation: Explanation | None = Field(None, description="Only with `explain: true`.")


class ClassifyOut(BaseModel):
    model: str
    version: int
    results: list[ClassifyResult]


class PredictParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int | None = Field(None, ge=1, description="Return only the k highest scores.")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Scores are the version's calibrated probabilities: softmax for a "
        "single-label version, sigmoid for a multi-label one. Naming the other function, or "
        "`none` (raw logits), is a 422 `unsupported_parameter`.")


INPUTS_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


class PredictIn(BaseModel):
    """The Hugging Face text-classification inference request.

    `inputs` is validated as a list (one string becomes a list of one, `single` remembers
    which was sent), so a bad item is named `inputs[3]` as /classify names `texts[3]`; as a
    `str | list[str]` union, errors named the union's branches (`inputs.str`).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: Annotated[list[str], WithJsonSchema(INPUTS_SCHEMA)] = Field(
        description="One text, or a list of texts (same checks as /classify's `texts`; "
        "errors name `inputs` or `inputs[i]`).")
    parameters: PredictParameters | None = None
    _single: bool = PrivateAttr(False)

    @property
    def single(self) -> bool:
        """True when `inputs` was one string (answered as a list of one list)."""
        return self._single

    @field_validator("inputs", mode="before")
    @classmethod
    def _string_or_list(cls, value: Any) -> Any:
        if not isinstance(value, str | list):
            raise PydanticCustomError("string_or_list_type",
                                      "Input should be a string or a list of strings")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _one_or_many(cls, data: Any, handler: ModelWrapValidatorHandler[PredictIn]
                     ) -> PredictIn:
        single = isinstance(data, dict) and isinstance(data.get("inputs"), str)
        model = handler({**data, "inputs": [data["inputs"]]} if single else data)
        model._single = single
        return model


class PredictLabel(BaseModel):
    label: str
    score: float = Field(description="Calibrated probability, as /classify's scores.")
