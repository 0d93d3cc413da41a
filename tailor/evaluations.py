"""`client.evaluations`: a registered version scored on a labeled dataset, kept."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tailor.transport import Transport

# POST /evaluations answers only once every row is scored: up to TAILOR_MAX_EVALUATION_ROWS
# (5,000 by default, about a minute on a CPU), after loading a cold version, and after up to
# 30 s waiting for a full serving queue. Ten minutes leaves room for a slow or busy server.
EVALUATION_TIMEOUT_S = 600.0


class Evaluations:
    """Stored evaluations. An evaluation is `{"id": "ev_...", "model": name, "version": int,
    "ref": as requested (e.g. "crisis@production"), "dataset_id", "dataset_name",
    "dataset_sha256", "labels": [str], "multi_label": bool, "n": rows scored,
    "skipped_unlabeled": int, "truncated": int, "accuracy", "macro_f1", "micro_f1": float |
    None (multi-label only), "roc_auc": float | None (binary only), "ece", "per_class":
    {label: {"precision", "recall", "f1", "support"}}, "confusion": None | {"labels",
    "matrix": [[gold x predicted counts]]} (single-label only), "reliability", "majority":
    {"decision", "accuracy", "macro_f1"}, "seconds", "owner", "created_at"}`.

    Evaluations belong to the key that created them (admin keys see all); another key's
    answers like an absent one (404 `not_found`).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, model: str, dataset_id: str, idempotency_key: str | None = None,
               timeout: float = EVALUATION_TIMEOUT_S) -> dict[str, Any]:
        """Run `model` ("name", "name:3" or "name@alias") on a labeled dataset and store the
        scores; return the evaluation. Synchronous: the answer comes when every row is scored.

        Args:
            idempotency_key: the same key again answers the first evaluation.
            timeout: seconds to wait for the answer.

        Raises:
            TailorError: 404 `model_not_found` / `version_not_found` / `alias_not_found`;
                422 `dataset_not_found`, `dataset_unlabeled`, `dataset_too_large`,
                `labels_unknown` (`details.unknown_labels`), `labels_invalid`
                (`details.rows`); 429 while the serving queue stays full; `timeout`.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._t.request("POST", "/evaluations", json={"model": model,
                                                              "dataset_id": dataset_id},
                               headers=headers, read_timeout=timeout)

    def get(self, evaluation_id: str) -> dict[str, Any]:
        """One evaluation. Raises TailorError 404 `not_found`."""
        return self._t.request("GET", f"/evaluations/{quote(evaluation_id, safe='')}")

    def page(self, model: str | None = None, version: int | None = None,
             dataset_id: str | None = None, limit: int | None = None,
             offset: int | None = None) -> dict[str, Any]:
        """One page, newest first, as GET /evaluations answers: `{"evaluations": [...],
        "next_offset": int | None}`; `model` is a model name, `version` one of its versions."""
        params = {k: v for k, v in {"model": model, "version": version, "dataset_id": dataset_id,
                                    "limit": limit, "offset": offset}.items() if v is not None}
        return self._t.request("GET", "/evaluations", params=params)

    # Defined last: inside the class body, `list` names this method from here on.
    def list(self, model: str | None = None, version: int | None = None,
             dataset_id: str | None = None, limit: int | None = None,
             offset: int | None = None) -> list[dict[str, Any]]:
        """Evaluations this key may see, newest first (one page; see `page` for
        `next_offset`)."""
        return self.page(model, version, dataset_id, limit, offset)["evaluations"]
