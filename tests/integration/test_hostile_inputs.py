"""A hostile sweep of issue 11's input kinds against real API processes.

Scenario 23: NUL characters in the strings of a job spec, on PostgreSQL. `data.dataset_id`
holding a NUL was a 500 (psycopg DataError: "text fields cannot contain NUL"), and the same in
`eval_dataset_id` reset the connection; descriptions, instructions and prompts holding one were
accepted and would have reached the model card (a PostgreSQL text column) after training.

Scenario 24: every upload path, /classify, /jobs, aliases and query parameters fed the kinds of
/work/shared/INPUTS.md at once on an embedded API process: no 500, every refusal a 4xx JSON
error naming its item, and a valid request alongside each still served.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny import corpus
from tests.integration.report import REPORT_ENV, record, record_input
from tests.support import Stack, make_env

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
REPORT = os.environ.get(REPORT_ENV)  # read before the `embedded` fixture clears TAILOR_*
JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv"}


def _job(ds: str, tiny: tuple[str, str], **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "hostile", "task": {"labels": [{"name": "crisis"},
                                             {"name": "calm", "verbalizer": "none"}]},
        "teacher": {"model": tiny[0]}, "student": {"model": tiny[1], "max_length": 32},
        "data": {"dataset_id": ds}}
    body.update(over)
    return body


def _clean_log(stack: Stack) -> None:
    logs = stack.logs()
    assert "Traceback" not in logs and "unhandled error" not in logs, logs


def test_nul_in_a_job_spec_is_422_on_postgresql(distributed: Stack, tiny_models,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if REPORT:
        monkeypatch.setenv(REPORT_ENV, REPORT)
    stack = distributed
    stack.start_api()
    with stack.client() as client:
        ds = client.post("/datasets", json={"name": "c", "records": [
            {"text": t} for t in corpus(12)]}).json()["id"]
        tiny = tiny_models
        cases = {  # field -> body; the first is the review's example (a 500 before)
            "data.dataset_id": _job("ds\x00x", tiny),
            "data.eval_dataset_id": _job(ds, tiny, data={"dataset_id": ds,
                                                         "eval_dataset_id": "ds\x00y"}),
            "task.labels[0].description": _job(ds, tiny, task={"labels": [
                {"name": "crisis", "description": "a\x00b"}, {"name": "calm"}]}),
            "task.instruction": _job(ds, tiny, task={"labels": [
                {"name": "crisis"}, {"name": "calm"}], "instruction": "\x00"}),
            "teacher.prompts[0]": _job(ds, tiny, teacher={"model": tiny[0],
                                                          "prompts": ["{text} \x00"]}),
        }
        for field, body in cases.items():
            resp = client.post("/jobs", content=json.dumps(body), headers=JSON)
            assert resp.status_code == 422, (field, resp.text)
            assert resp.json()["error"]["details"] == {"field": field, "reason": "nul"}
        for path, body, field in (
                ("/datasets", {"name": "n", "records": [{"text": "a", "label": "x\x00"}]},
                 "records[0].label"),
                ("/keys", {"name": "k\x00", "scopes": ["classify"]}, "name")):
            resp = client.post(path, content=json.dumps(body), headers=JSON)
            assert resp.status_code == 422, (path, resp.text)
            assert resp.json()["error"]["details"]["field"] == field
        jobs = client.get("/jobs").json()["jobs"]
        ok = client.post("/jobs", json=_job(ds, tiny))  # the API still serves valid work
        assert ok.status_code == 202, ok.text
    assert jobs == []
    _clean_log(stack)
    record(23, "NUL in job spec strings and ids (PostgreSQL)",
           "POST /jobs with NUL in data.dataset_id (was a 500), eval_dataset_id (was a reset "
           "connection), a label description, the instruction, a prompt; NUL in a dataset "
           "label and a key name",
           ["every one 422 invalid_text naming its field, reason nul",
            "no job created, no traceback in the API log",
            "a valid job right after: 202"], {"requests": len(cases) + 2})
    record_input("NUL characters", ["POST /jobs (every spec string)", "POST /datasets JSON",
                                    "POST /keys", "real API on PostgreSQL"],
                 ["NUL in data.dataset_id / eval_dataset_id", "in a label description, the "
                  "instruction, a prompt", "in a dataset label, a key name"],
                 ["422 invalid_text naming the path (was a 500 on PostgreSQL)"])


@pytest.fixture
def embedded_api(embedded: Path, tiny_models, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Stack]:
    from tests.fixtures.versions import register_tiny

    if REPORT:
        monkeypatch.setenv(REPORT_ENV, REPORT)
    register_tiny(tiny_models[1], seed=1)
    stack = Stack(embedded, make_env(embedded, TAILOR_MAX_BODY_BYTES=str(2 << 20)))
    stack.start_api()
    yield stack
    stack.discard()


def _chunks(total: int, size: int = 256 << 10) -> Iterator[bytes]:
    """Valid JSONL rows sent without Content-Length (chunked), `total` bytes in all."""
    line = b'{"text": "flood"}\n'
    for _ in range(0, total, size):
        yield line * (size // len(line))


# (what, method, path, request kwargs, field the error must name or None for "accepted")
def _sweep(ds: str, tiny: tuple[str, str]) -> list[tuple[str, str, str, dict[str, Any],
                                                         str | None]]:
    arabic = [{"name": "فيضان", "verbalizer": "crisis"}, {"name": "هادئ", "verbalizer": "none"}]
    return [
        ("JSONL: a repeated key", "POST", "/datasets?name=n",
         {"content": b'{"text": "a"}\n{"text": "b", "text": "c"}\n', "headers": NDJSON},
         "line 2"),
        ("JSONL: CR-only line ends", "POST", "/datasets?name=n",
         {"content": b'{"text": "a"}\r{"text": "b"}\r', "headers": NDJSON}, "line 1"),
        ("JSONL: a truncated last line", "POST", "/datasets?name=n",
         {"content": b'{"text": "a"}\n{"text": "b', "headers": NDJSON}, "line 2"),
        ("JSONL: a 1 MB line", "POST", "/datasets?name=n",
         {"content": b'{"text": "' + b"a" * (1 << 20) + b'"}\n', "headers": NDJSON}, "line 1"),
        ("JSONL: U+2028, U+0085, \\v inside texts", "POST", "/datasets?name=n",
         {"content": '{"text": "a\u2028b\x85c\\u000bd"}\n'.encode(), "headers": NDJSON}, None),
        ("CSV: CR-only, LF and CRLF mixed, a quoted newline", "POST", "/datasets?name=c",
         {"content": b'text,label\r"one\ntwo",a\rthree,b\r\nfour,c\n', "headers": CSV}, None),
        ("CSV: Latin-1", "POST", "/datasets?name=c",
         {"content": "text\ncaf\xe9\n".encode("latin-1"), "headers": CSV}, "row 1 (line 2)"),
        ("CSV: UTF-16", "POST", "/datasets?name=c",
         {"content": "text\na\n".encode("utf-16"), "headers": CSV}, "line 1"),
        ("CSV: a 1 MB cell", "POST", "/datasets?name=c",
         {"content": b"text\n" + b"a" * (1 << 20) + b"\n", "headers": CSV}, "row 1 (line 2)"),
        ("multipart: UTF-8 BOM CSV", "POST", "/datasets",
         {"files": {"file": ("a.csv", b"\xef\xbb\xbftext\nx\n")}}, None),
        ("query: Latin-1 dataset name", "POST", "/datasets?name=caf%E9",
         {"content": b'{"text": "a"}\n', "headers": NDJSON}, "query.name"),
        ("query: ?limit=true", "GET", "/datasets?limit=true", {}, "query.limit"),
        ("JSON: text of variation selectors", "POST", "/datasets",
         {"json": {"name": "d", "records": [{"text": "\ufe0f\ufe0f"}]}}, "records[0].text"),
        ("/classify: lone surrogate", "POST", "/classify",
         {"content": b'{"model": "crisis", "texts": ["ok", "Flood \\ud83d"]}', "headers": JSON},
         "texts[1]"),
        ("/classify: \\v \\f \\x1c \\x85 U+2028 inside texts", "POST", "/classify",
         {"json": {"model": "crisis", "texts": ["a\x0bb", "c\x0cd", "e\x1cf", "g\x85h",
                                                "i\u2028j"]}}, None),
        ("/classify: a boolean top_k", "POST", "/classify",
         {"json": {"model": "crisis", "texts": ["a"], "top_k": True}}, "top_k"),
        ("/jobs: NaN nested", "POST", "/jobs",
         {"content": json.dumps(_job(ds, tiny)).replace('"max_length": 32',
                                                        '"max_length": NaN').encode(),
          "headers": JSON}, "body"),
        ("/jobs: a repeated key nested", "POST", "/jobs",
         {"content": json.dumps(_job(ds, tiny)).replace('"model":', '"model": "x", "model":',
                                                        1).encode(), "headers": JSON}, "body"),
        ("/jobs: labels in Arabic", "POST", "/jobs",
         {"json": _job(ds, tiny, task={"labels": arabic})}, None),
        ("/jobs: one label", "POST", "/jobs",
         {"json": _job(ds, tiny, task={"labels": [{"name": "crisis"}]})}, "task.labels"),
        ("/jobs: empty eval_dataset_id", "POST", "/jobs",
         {"json": _job(ds, tiny, data={"dataset_id": ds, "eval_dataset_id": ""})},
         "data.eval_dataset_id"),
        ("PUT alias: version true", "PUT", "/models/crisis/aliases/production",
         {"json": {"version": True}}, "version"),
        ("chunked JSONL over the body limit", "POST", "/datasets?name=n",
         {"content": _chunks(3 << 20), "headers": NDJSON}, None),
    ]


def test_every_path_answers_every_kind_with_its_item_named(embedded_api: Stack,
                                                           tiny_models) -> None:
    stack = embedded_api
    with stack.client() as client:
        ds = client.post("/datasets", json={"name": "c", "records": [
            {"text": t} for t in corpus(12)]}).json()["id"]
        held, worst_ms = [], 0.0
        for what, method, path, kwargs, field in _sweep(ds, tiny_models):
            resp = client.request(method, path, **kwargs)
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            worst_ms = max(worst_ms, 1000 * (time.perf_counter() - started))
            assert resp.status_code < 500, (what, resp.text)
            if what.startswith("chunked"):
                assert resp.status_code == 413, (what, resp.text)
            elif field is None:
                assert resp.status_code in (200, 201, 202), (what, resp.text)
            else:
                error = resp.json()["error"]
                assert 400 <= resp.status_code < 500 and set(error) == {"code", "message",
                                                                        "details"}, what
                named = (error["details"] or {}).get("field") if isinstance(
                    error["details"], dict) else error["message"].split(":")[0]
                assert named == field or error["message"].startswith(f"{field}:"), (what, error)
            held.append(f"{what}: {resp.status_code}")
    _clean_log(stack)
    record(24, "every input path fed INPUTS.md's kinds (embedded API process)",
           f"{len(held)} hostile requests: JSONL, CSV, multipart, query, /classify, /jobs, "
           "alias bodies (encodings, newline conventions, 1 MB lines and cells, truncation, "
           "repeated keys, NaN, booleans for integers, invisible texts, labels in Arabic, a "
           "chunked body over the limit)",
           ["no 500 and no traceback", "each refusal a 4xx JSON error naming its field, line or "
            "row", "valid look-alikes accepted unchanged", "/healthz 200 after every request"],
           {"requests": len(held), "healthz_worst_ms": round(worst_ms, 1)})
    record_input("labels in other scripts", ["POST /jobs task.labels", "eval set upload"],
                 ["Arabic, CJK, Devanagari (marks), NFC vs NFD duplicates, 'crisis '"],
                 ["accepted in any script; duplicates and surrounding spaces 422 naming "
                  "task.labels[i].name"])
    record_input("query text that is not UTF-8", ["POST /datasets ?name="],
                 ["%E9 (Latin-1)", "%ED%A0%BD (a surrogate)", "%FF"],
                 ["422 naming query.name; was stored with U+FFFD"])
    record_input("repeated keys in the CLI's files", ["tailor classify --file x.jsonl",
                                                      "tailor jobs submit spec.yaml/.json"],
                 ["a key twice on a JSONL line", "epochs twice in a YAML spec",
                  "name twice in a JSON spec", "yes/no/off label names, a date"],
                 ["refused naming the file line (was: last one silently kept)",
                  "YAML read as 1.2: yes/no stay label names"])
