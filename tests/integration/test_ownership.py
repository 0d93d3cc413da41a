"""Keys own what they create, on a real API process and PostgreSQL (scenario 13).

Two train keys (A from TAILOR_API_KEYS, B stored through /keys) and an admin key. Another
key's dataset or job answers exactly like an id that does not exist, on every route that
takes one; lists, filters, the dashboard and the CLI show only the caller's own; admin sees
all; an Idempotency-Key reused by another key makes that key's own row. The database starts
at revision 0002 with rows in it: the API's migration backfills them as admin's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.migrate import upgrade
from tests.fixtures import legacy
from tests.fixtures.tiny import corpus
from tests.integration.lifecycle import EVAL
from tests.integration.report import record, record_input
from tests.support import Stack, job_body

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
TAILOR = str(Path(sys.executable).with_name("tailor"))
KEY_A, ROOT = "owner-a-key", "owner-root-key"
ABSENT = {"ds": "ds_0000000000000000", "job": "job_0000000000000000"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(http: httpx.Client, key: str, name: str, labeled: bool = False) -> str:
    rows = ([{"text": t, "label": lab} for t, lab in EVAL] if labeled
            else [{"text": t} for t in corpus(24)])
    resp = http.post("/datasets", json={"name": name, "records": rows}, headers=bearer(key))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def submit(http: httpx.Client, key: str, body: dict[str, Any],
           idempotency_key: str | None = None) -> httpx.Response:
    headers = {**bearer(key), **({"Idempotency-Key": idempotency_key} if idempotency_key
                                 else {})}
    return http.post("/jobs", json=body, headers=headers)


def assert_same_as_absent(foreign: httpx.Response, absent: httpx.Response, foreign_id: str,
                          absent_id: str) -> None:
    """Another key's id must answer byte for byte like an absent one (ids swapped)."""
    assert foreign.status_code == absent.status_code, (foreign.text, absent.text)
    assert foreign.headers["content-type"] == absent.headers["content-type"]
    assert foreign.json() == json.loads(absent.text.replace(absent_id, foreign_id))


def ids(resp: httpx.Response, field: str) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {row["id"] for row in resp.json()[field]}


def cli(stack: Stack, key: str, *args: str) -> str:
    env = {**stack.env, "TAILOR_URL": stack.url, "TAILOR_API_KEY": key, "COLUMNS": "200"}
    proc = subprocess.run([TAILOR, *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_keys_see_use_and_cancel_only_their_own(distributed: Stack, tiny_models, pg_url):
    upgrade(pg_url, "0002")
    old = legacy.seed(pg_url)
    distributed.env["TAILOR_API_KEYS"] = f"{KEY_A}:train,{ROOT}:admin"
    distributed.start_api()  # migrates to head: 0003 backfills the old rows
    assert legacy.owners(pg_url, old) == ("admin", "admin")
    assert legacy.children(pg_url, old) == (old.records, old.events)
    probes = 0
    with distributed.client() as http:
        made = http.post("/keys", json={"name": "b", "scopes": ["train"]}, headers=bearer(ROOT))
        key_b = made.json()["key"]
        a_ds, a_ev = upload(http, KEY_A, "a corpus"), upload(http, KEY_A, "a eval", labeled=True)
        b_ds = upload(http, key_b, "b corpus")
        a_resp = submit(http, KEY_A, job_body("ajob", a_ds, *tiny_models, eval_dataset_id=a_ev),
                        idempotency_key="shared-key")
        b_resp = submit(http, key_b, job_body("bjob", b_ds, *tiny_models),
                        idempotency_key="shared-key")
        assert a_resp.status_code == b_resp.status_code == 202, (a_resp.text, b_resp.text)
        a_job, b_job = a_resp.json()["id"], b_resp.json()["id"]
        assert a_job != b_job and b_resp.json()["owner"] == made.json()["id"]
        replay = submit(http, key_b, job_body("bjob", b_ds, *tiny_models), "shared-key")
        assert replay.json()["id"] == b_job  # B's own replay still works

        # B probes A's ids (and the legacy admin-owned ones) on every route that takes one.
        foreign = [("ds", a_ds, "GET", "/datasets/{}"), ("ds", a_ev, "GET", "/datasets/{}"),
                   ("ds", old.dataset_id, "GET", "/datasets/{}"),
                   ("job", a_job, "GET", "/jobs/{}"), ("job", old.job_id, "GET", "/jobs/{}"),
                   ("job", a_job, "GET", "/jobs/{}/events"),
                   ("job", a_job, "POST", "/jobs/{}/cancel"),
                   ("job", old.job_id, "POST", "/jobs/{}/cancel"),  # final: 404, never 409
                   ("job", a_job, "GET", "/ui/parts/jobs/{}")]
        for kind, row_id, method, path in foreign:
            absent_id = ABSENT[kind]
            seen = http.request(method, path.format(row_id), headers=bearer(key_b))
            missing = http.request(method, path.format(absent_id), headers=bearer(key_b))
            assert seen.status_code == 404, (path, seen.text)
            assert_same_as_absent(seen, missing, row_id, absent_id)
            probes += 1
        for field, row_id in (("dataset_id", a_ds), ("eval_dataset_id", a_ev)):
            data = {"dataset_id": b_ds, field: row_id}
            seen = submit(http, key_b, {**job_body("bjob", b_ds, *tiny_models), "data": data})
            data[field] = ABSENT["ds"]
            missing = submit(http, key_b, {**job_body("bjob", b_ds, *tiny_models),
                                           "data": data})
            assert seen.status_code == 422 and seen.json()["error"]["code"] == \
                "dataset_not_found", seen.text
            assert_same_as_absent(seen, missing, row_id, ABSENT["ds"])
            probes += 1

        # Models are shared (a train key holds classify) but never name another key's job.
        not_ready = http.post("/classify", json={"model": "ajob", "texts": ["flood"]},
                              headers=bearer(key_b))
        assert not_ready.status_code == 409 and a_job not in not_ready.text, not_ready.text

        # Lists and their filters show only the caller's own; admin sees every owner's.
        assert ids(http.get("/jobs", headers=bearer(KEY_A)), "jobs") == {a_job}
        assert ids(http.get("/jobs", headers=bearer(key_b)), "jobs") == {b_job}
        assert ids(http.get("/jobs", params={"name": "ajob"}, headers=bearer(key_b)),
                   "jobs") == set()
        assert ids(http.get("/jobs", params={"state": "queued"}, headers=bearer(key_b)),
                   "jobs") == {b_job}
        assert ids(http.get("/jobs", headers=bearer(ROOT)), "jobs") == {a_job, b_job, old.job_id}
        assert ids(http.get("/datasets", headers=bearer(KEY_A)), "datasets") == {a_ds, a_ev}
        assert ids(http.get("/datasets", headers=bearer(key_b)), "datasets") == {b_ds}
        assert ids(http.get("/datasets", headers=bearer(ROOT)), "datasets") == \
            {a_ds, a_ev, b_ds, old.dataset_id}
        b_page = http.get("/ui/parts/jobs", headers=bearer(key_b)).text
        assert b_job in b_page and a_job not in b_page and old.job_id not in b_page
        root_page = http.get("/ui/parts/jobs", headers=bearer(ROOT)).text
        assert a_job in root_page and b_job in root_page
        b_cli = json.loads(cli(distributed, key_b, "jobs", "list", "--json"))["jobs"]
        assert {j["id"] for j in b_cli} == {b_job}
        b_datasets = cli(distributed, key_b, "datasets", "list")
        assert b_ds in b_datasets and a_ds not in b_datasets

        # Admin reads, streams and cancels anyone's; each owner cancels its own.
        assert http.get(f"/jobs/{a_job}", headers=bearer(ROOT)).status_code == 200
        with http.stream("GET", f"/jobs/{a_job}/events", headers=bearer(ROOT)) as stream:
            assert stream.status_code == 200
            assert next(line for line in stream.iter_lines() if line.startswith("event:")) \
                == "event: state"
        assert http.post(f"/jobs/{b_job}/cancel", headers=bearer(ROOT)).json()["state"] == \
            "cancelled"
        assert http.post(f"/jobs/{a_job}/cancel", headers=bearer(KEY_A)).json()["state"] == \
            "cancelled"

    # A restart keeps env keys' ownership: their ids derive from the key's hash.
    api = distributed.procs[-1]
    api.stop()
    t0 = time.monotonic()
    distributed.start_api()
    restart_s = time.monotonic() - t0
    with distributed.client() as http:
        assert http.get(f"/datasets/{a_ds}", headers=bearer(KEY_A)).status_code == 200
        assert http.get(f"/jobs/{a_job}", headers=bearer(key_b)).status_code == 404

    held = ["another key's dataset/job answers exactly like an absent id (404; 422 "
            "dataset_not_found as dataset_id/eval_dataset_id), also once final (no 409)",
            "lists, name/state filters, dashboard and CLI show only the caller's own",
            "admin sees, streams and cancels every owner's; rows from before 0003 are admin's",
            "an Idempotency-Key reused by another key makes that key's own job",
            "env key ownership survives an API restart"]
    record(13, "ownership between keys",
           "two train keys (env + stored) and an admin key; B probes A's and legacy ids on "
           "every route; database upgraded from 0002 with rows present",
           held, {"foreign ids probed": probes, "legacy rows backfilled": 2,
                  "API restart s": round(restart_s, 1)})
    record_input("ids owned by another key",
                 ["GET /datasets/{id}", "GET /jobs/{id}", "GET /jobs/{id}/events",
                  "POST /jobs/{id}/cancel", "POST /jobs data.dataset_id / eval_dataset_id",
                  "/ui/parts/jobs/{id}", "Idempotency-Key"],
                 ["another train key's dataset, eval set and job", "admin-owned legacy rows",
                  "a final job of another key", "the same Idempotency-Key from two keys"],
                 ["same status and body as an absent id", "no 409 or 422 that reveals it"])
