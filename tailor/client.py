"""`Client`: one Tailor server, its sub-objects, and /classify over lists of any length."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tailor.connection import Connection
from tailor.datasets import Datasets
from tailor.errors import TailorError
from tailor.evaluations import EVALUATION_TIMEOUT_S, Evaluations
from tailor.jobs import Jobs
from tailor.models import Models
from tailor.transport import DEFAULT_TIMEOUT_S, Transport

# The server's default TAILOR_MAX_CLASSIFY_TEXTS (README, Configuration). A server with a
# lower limit says so in its 413 (`details.max_texts`) and the client splits smaller.
DEFAULT_MAX_TEXTS = 256
# The same for requests with `explain: true` (TAILOR_MAX_EXPLAIN_TEXTS); a lower limit comes
# in a 422 `too_many_to_explain` with `details.max_texts`.
DEFAULT_MAX_EXPLAIN_TEXTS = 8
# How the server names a text in its errors: `details.field` is "texts[3]".
_ITEM = re.compile(r"^texts\[(\d+)\]")


class Client:
    """A Tailor server: `datasets`, `jobs`, `models`, `evaluations`, and `classify`.

    Args:
        url: the API's base URL; default TAILOR_URL, then the config file's `url`, then
            http://127.0.0.1:8000.
        api_key: sent as `Authorization: Bearer`; default TAILOR_API_KEY, then the config
            file's `api_key`, then none.
        timeout: seconds to connect and to wait for each answer.
        config: the TOML config file; default TAILOR_CONFIG, then
            ~/.config/tailor/config.toml (the same file the `tailor` command reads).

    Every method raises TailorError (status, code, message, details) for any failure.
    Use it as a context manager, or call close(), to release the connection pool.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, config: str | None = None) -> None:
        self.connection = Connection.resolve(url, api_key, config)
        self.transport = Transport(self.connection, timeout)
        self.datasets = Datasets(self.transport)
        self.jobs = Jobs(self.transport)
        self.models = Models(self.transport)
        self.evaluations = Evaluations(self.transport)
        self.max_texts: int | None = None  # the server's limit, once it has told us
        self.max_explain_texts: int | None = None  # the same with explain: true

    @property
    def url(self) -> str:
        return self.connection.url

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def classify(self, model: str, texts: Sequence[str], threshold: float | None = None,
                 top_k: int | None = None, explain: bool = False,
                 batch_size: int | None = None) -> dict[str, Any]:
        """Classify `texts` with one version of `model`, in as many requests as needed.

        Args:
            model: "name" (latest), "name:3" (a version) or "name@alias"; the version the
                first request resolves is used for every later one.
            texts: the texts, in order.
            threshold, top_k, explain: as POST /classify takes them.
            batch_size: texts per request; default and ceiling the server's limit (with
                `explain`, its lower limit on explained texts).

        Returns:
            `{"model": name, "version": int, "results": [{"label": str | [str] | None,
            "scores": {label: probability}, "truncated": bool}, ...]}`, one result per
            text, in input order.

        Raises:
            TailorError: the server's error for the first request that fails; for a text
                it names (`details.field` "texts[i]", relative to that request, as in the
                message), `details.index` is the text's position in `texts`.
            TypeError: `texts` is one string rather than a list of them.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        options: dict[str, Any] = {k: v for k, v in {"threshold": threshold,
                                                     "top_k": top_k}.items() if v is not None}
        if explain:
            options["explain"] = True
        ref, name, version = model, model, 0
        results: list[dict[str, Any]] = []
        start = 0
        while True:  # at least one request: the server judges an empty list
            chunk = texts[start:start + self._batch(batch_size, explain)]
            try:
                body = self.transport.request("POST", "/classify",
                                              json={"model": ref, "texts": chunk, **options})
            except TailorError as exc:
                limit = _server_limit(exc)
                if limit is not None and 0 < limit < len(chunk):
                    if exc.status == 413:
                        self.max_texts = limit
                    else:
                        self.max_explain_texts = limit
                    continue
                raise _with_index(exc, start) from exc
            if start == 0:  # pin the version the first request resolved
                name, version = body["model"], body["version"]
                ref = f"{name}:{version}"
            results.extend(body["results"])
            start += len(chunk)
            if start >= len(texts):
                break
        return {"model": name, "version": version, "results": results}

    def evaluate(self, model: str, dataset_id: str, idempotency_key: str | None = None,
                 timeout: float = EVALUATION_TIMEOUT_S) -> dict[str, Any]:
        """Score `model` ("name", "name:3", "name@alias") on a labeled dataset and keep the
        result; return the stored evaluation (accuracy, macro_f1, ece, roc_auc, per_class,
        confusion, ...). It answers when every row is scored, so it waits up to `timeout`
        seconds (10 minutes by default), not the client's timeout. See Evaluations.create
        for the shape and the errors raised."""
        return self.evaluations.create(model, dataset_id, idempotency_key, timeout)

    def _batch(self, batch_size: int | None, explain: bool = False) -> int:
        """Texts for the next request: `batch_size` within the limits the server has stated,
        or (none given) those limits, the server's defaults where it has stated none."""
        known = [n for n in (self.max_texts, self.max_explain_texts if explain else None) if n]
        if batch_size is None:
            limit = self.max_texts or DEFAULT_MAX_TEXTS
            if explain:
                limit = min(limit, self.max_explain_texts or DEFAULT_MAX_EXPLAIN_TEXTS)
            return limit
        return max(1, min([batch_size, *known]))  # `known` is empty on a fresh client


def _server_limit(exc: TailorError) -> int | None:
    """The per-request text limit a 413 (or, for explained texts, a 422
    `too_many_to_explain`) states, if it states one."""
    if not isinstance(exc.details, dict) or not (
            exc.status == 413 or (exc.status == 422 and exc.code == "too_many_to_explain")):
        return None
    limit = exc.details.get("max_texts")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _with_index(exc: TailorError, start: int) -> TailorError:
    """`exc` with `details.index`: where in the caller's list the text it names sits."""
    field = exc.details.get("field") if isinstance(exc.details, dict) else None
    match = _ITEM.match(field) if isinstance(field, str) else None
    if match is None:
        return exc
    details = {**exc.details, "index": start + int(match.group(1))}
    return TailorError(exc.status, exc.code, exc.message, details)
