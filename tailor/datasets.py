"""`client.datasets`: upload, list, get, delete."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tailor.errors import TailorError
from tailor.transport import Transport

# What a file's suffix says it is; the server reads the body by its Content-Type.
UPLOAD_TYPES = {".csv": "text/csv", ".jsonl": "application/x-ndjson",
                ".ndjson": "application/x-ndjson"}
RECORDS_NAME = "records"  # the name of a dataset uploaded from records when none is given

Records = Sequence[str | Mapping[str, Any]]


class Datasets:
    """Datasets of texts (optionally labeled) that jobs train on and evaluations score.

    A dataset is `{"id": "ds_...", "name", "rows": int, "labeled_rows": int, "sha256",
    "labels": [str], "owner", "created_at", "warnings": [{"code", "message", "columns"}]}`.
    Another key's dataset answers like an absent one (404 `not_found`).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def upload(self, path_or_records: str | os.PathLike[str] | Records, name: str | None = None,
               *, text_column: str | None = None, label_column: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Upload a CSV/JSONL file, or records, and return the dataset.

        Args:
            path_or_records: a path to a `.csv` (a `text` column, optional `label`) or
                `.jsonl`/`.ndjson` file (one `{"text", "label"?}` object per line); or a
                list whose items are texts or `{"text": str, "label"?: str | [str]}` dicts.
            name: the dataset's name; default the file's stem, or "records".
            text_column, label_column: where the text and label are, when not `text`/`label`.
            idempotency_key: the same key twice answers the first upload's dataset.

        Raises:
            TailorError: `unsupported_file` for another suffix, `file_unreadable` when the
                file cannot be read; the server's 4xx naming the row or field (`invalid`,
                `payload_too_large`, ...).
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        columns = {"text_column": text_column, "label_column": label_column}
        if isinstance(path_or_records, str | os.PathLike):
            path = Path(path_or_records)
            content_type = UPLOAD_TYPES.get(path.suffix.lower())
            if content_type is None:
                raise TailorError(None, "unsupported_file", f"{path}: use a .jsonl or .csv file")
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise TailorError(None, "file_unreadable",
                                  f"cannot read {path}: {exc.strerror}") from exc
            params = {k: v for k, v in {"name": name or path.stem, **columns}.items()
                      if v is not None}
            return self._t.request("POST", "/datasets", params=params, content=content,
                                   headers={**headers, "Content-Type": content_type})
        records = [{"text": r} if isinstance(r, str) else dict(r) for r in path_or_records]
        body = {"name": name or RECORDS_NAME, "records": records,
                **{k: v for k, v in columns.items() if v is not None}}
        return self._t.request("POST", "/datasets", json=body, headers=headers)

    def list(self, limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """The datasets this key may see, newest first."""
        params = {k: v for k, v in {"limit": limit, "offset": offset}.items() if v is not None}
        return self._t.request("GET", "/datasets", params=params)["datasets"]

    def get(self, dataset_id: str) -> dict[str, Any]:
        """One dataset. Raises TailorError 404 `not_found`."""
        return self._t.request("GET", f"/datasets/{quote(dataset_id, safe='')}")

    def delete(self, dataset_id: str) -> None:
        """Delete a dataset and its records.

        Raises:
            TailorError: 404 `not_found` (another key's dataset too); 409
                `dataset_in_use` while a job that is not final uses it (`details.jobs`).
        """
        self._t.request("DELETE", f"/datasets/{quote(dataset_id, safe='')}")
