"""`client.evaluations`: a registered version scored on a labeled dataset, kept."""

from __future__ import annotations

from typing import Any

from tailor.transport import Transport


class Evaluations:
    """Stored evaluations: `{"id", "model": {"name", "version"}, "dataset_id", "metrics":
    {"accuracy", "macro_f1", "per_class", "ece", "confusion", ...}, "created_at", ...}`."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, model: str, dataset_id: str) -> dict[str, Any]:
        """Run `model` ("name", "name:3" or "name@alias") on a labeled dataset and store the
        scores; return the evaluation.

        Raises:
            TailorError: 404 for an unknown model or dataset; 422 when the dataset has no
                labels the model knows.
        """
        return self._t.request("POST", "/evaluations",
                               json={"model": model, "dataset_id": dataset_id})

    def list(self, model: str | None = None) -> list[dict[str, Any]]:
        """Evaluations this key may see, optionally of one model name only."""
        params = {"model": model} if model else {}
        return self._t.request("GET", "/evaluations", params=params)["items"]
