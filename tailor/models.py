"""`client.models`: the registry of trained students (shared by every key with classify)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tailor.transport import Transport

# The first export of a version loads its base model, merges and exports it before the first
# byte: about a minute for MiniLM on 2 cores, more on a loaded server.
EXPORT_READ_TIMEOUT_S = 600.0


def _version_path(name: str, version: int) -> str:
    return f"/models/{quote(name, safe='')}/versions/{int(version)}"


class Models:
    """Registered models and their immutable versions.

    A model is `{"name", "latest_version": int | None, "aliases": {alias: version},
    "versions": [...]}`; a version `{"name", "version", "labels", "multi_label", "metrics",
    "lineage", "warnings", "archived", ...}`. Moving aliases and archiving need `admin`.
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def list(self, include_archived: bool = False) -> list[dict[str, Any]]:
        """Every model with its latest version and aliases."""
        params = {"include_archived": "true"} if include_archived else {}
        return self._t.request("GET", "/models", params=params)["models"]

    def get(self, name: str, version: int | None = None, include_archived: bool = False
            ) -> dict[str, Any]:
        """A model with its versions, or (with `version`) one version's detail: metrics
        (teacher and student side by side), lineage, files. Raises TailorError 404."""
        if version is not None:
            return self._t.request("GET", _version_path(name, version))
        params = {"include_archived": "true"} if include_archived else {}
        return self._t.request("GET", f"/models/{quote(name, safe='')}", params=params)

    def card(self, name: str, version: int) -> str:
        """The version's model card (markdown)."""
        return self._t.text(f"{_version_path(name, version)}/card")

    def alias(self, name: str, alias: str, version: int, force: bool = False
              ) -> dict[str, Any]:
        """Point `alias` (e.g. "production") at `version`; return `{"name", "alias",
        "version"}`. The version is loaded for serving before the alias moves.

        Raises:
            TailorError: 409 `version_has_warnings` (the warnings in `details`) unless
                `force`; 409 `version_archived`; 404; 503 when the version cannot load.
        """
        body: dict[str, Any] = {"version": int(version)}
        if force:
            body["force"] = True
        return self._t.request("PUT", f"/models/{quote(name, safe='')}/aliases/"
                                      f"{quote(alias, safe='')}", json=body)

    def archive(self, name: str, version: int) -> dict[str, Any]:
        """Hide a version from listings and refuse aliases to it; files stay."""
        return self._t.request("POST", f"{_version_path(name, version)}/archive")

    def unarchive(self, name: str, version: int) -> dict[str, Any]:
        """Make an archived version listable and aliasable again."""
        return self._t.request("POST", f"{_version_path(name, version)}/unarchive")

    def delete_version(self, name: str, version: int) -> None:
        """Delete an archived, unaliased version and its files (its number is never reused).
        Needs an `admin` key, like archiving.

        Raises:
            TailorError: 409 `version_not_archived` (archive it first) or `version_aliased`
                (`details.aliases`); 404 `model_not_found` / `version_not_found`; 403.
        """
        self._t.request("DELETE", _version_path(name, version))

    def export(self, name: str, version: int, format: str, path: str | os.PathLike[str]
               ) -> Path:
        """Download a standalone student to `path` (a .tar.gz) and return it; the file
        appears only once complete. `format`: "onnx" (one graph from token ids to calibrated
        probabilities, with tokenizer.json) or "hf" (a Hugging Face encoder folder and the
        head as safetensors); each holds a README whose example prints what /classify
        answers. The first export of a version is built while this waits (a minute on a
        small CPU); later ones come from the server's cache. Archived versions export too.

        Raises:
            TailorError: 404 for an unknown version; 422 for an unknown format; 409
                `not_exportable` (`details.reason`) when the version's files or its base
                model cannot be read; `file_unwritable` when `path` cannot be written.
        """
        timeout = httpx.Timeout(self._t.http.timeout.connect, read=EXPORT_READ_TIMEOUT_S)
        return self._t.download(f"{_version_path(name, version)}/export", Path(path),
                                params={"format": format}, timeout=timeout)
