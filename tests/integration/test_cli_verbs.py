"""`tailor evaluate`, `tailor evaluations list/show` and the delete verbs (`datasets delete`,
`jobs delete`, `models delete`) against a real embedded Tailor API (SQLite, filesystem
broker; no worker, so a submitted job stays queued until cancelled), with API keys on. Every
command runs as its own process through the installed `tailor` script."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tailor_common.metrics import fmt
from tests.fixtures.tiny import CALM_TEXTS, CRISIS_TEXTS, corpus
from tests.fixtures.versions import register_tiny
from tests.support import Stack, embedded_home, job_body, make_env

pytestmark = [pytest.mark.integration]
TAILOR = str(Path(sys.executable).with_name("tailor"))
ADMIN, TRAINER = "verbs-admin", "verbs-trainer"
HAZARDS = ("flood", "fire", "storm")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
           ) -> Iterator[Stack]:
    """An API with crisis:1, crisis:2 (binary: crisis, calm) and hazards:1 (multi-label)."""
    root = tmp_path_factory.mktemp("verbs")
    with pytest.MonkeyPatch.context() as mp, embedded_home(root, mp) as home:
        register_tiny(tiny_models[1], seed=1)
        register_tiny(tiny_models[1], seed=2)
        register_tiny(tiny_models[1], name="hazards", labels=HAZARDS, multi_label=True, seed=3)
    stack = Stack(home, make_env(home, TAILOR_API_KEYS=f"{ADMIN}:admin,{TRAINER}:train",
                                 TAILOR_SERVING_MAX_QUEUE_DELAY_MS="60000"))
    stack.start_api()
    yield stack
    stack.discard()


def tailor(server: Stack, *args: str, key: str = TRAINER, answer: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    environ = {**server.env, "TAILOR_URL": server.url, "TAILOR_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run([TAILOR, *args], env=environ, capture_output=True, text=True,
                          input=answer if answer is not None else "", timeout=120,
                          cwd=server.home)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert proc.returncode == status, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stderr


def api(server: Stack, key: str = TRAINER) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {key}"})


def cells(output: str) -> list[list[str]]:
    """The rows of every Rich table in `output` (headers too), as lists of stripped cells."""
    lines = [line.replace("┃", "│").strip() for line in output.splitlines()]
    return [[c.strip() for c in line.strip("│").split("│")]
            for line in lines if line.count("│") >= 3]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    return path


def test_evaluate_a_labeled_file_then_list_and_show(server: Stack, tmp_path: Path):
    admin = api(server, ADMIN)
    assert admin.put("/models/crisis/aliases/production", json={"version": 2}).status_code == 200
    labeled = write_csv(tmp_path / "gold.csv", [*((t, "crisis") for t in CRISIS_TEXTS[:6]),
                                                *((t, "calm") for t in CALM_TEXTS[:6]),
                                                ("no label on this row", "")])
    printed = ok(tailor(server, "evaluate", "-m", "crisis@production", str(labeled)))
    trainer = api(server)
    ev = trainer.get("/evaluations", params={"model": "crisis"}).json()["evaluations"][0]
    assert (ev["version"], ev["ref"], ev["dataset_name"]) == (2, "crisis@production", "gold")
    assert (ev["n"], ev["skipped_unlabeled"]) == (12, 1)
    assert f"dataset {ev['dataset_id']} gold: 13 rows, 12 labeled" in printed
    assert (f"evaluation {ev['id']}: crisis:2 (crisis@production) on gold ({ev['dataset_id']}); "
            "12 labeled rows scored, 1 unlabeled skipped") in printed
    rows = cells(printed)
    assert ["accuracy", fmt(ev["accuracy"]), fmt(ev["majority"]["accuracy"])] in rows
    assert ["macro-F1", fmt(ev["macro_f1"]), fmt(ev["majority"]["macro_f1"])] in rows
    assert ["ECE (lower is better)", fmt(ev["ece"]), ""] in rows
    assert ["ROC-AUC (crisis)", fmt(ev["roc_auc"]), ""] in rows
    for label, s in ev["per_class"].items():
        assert [label, fmt(s["precision"]), fmt(s["recall"]), fmt(s["f1"]),
                str(s["support"])] in rows
    assert "confusion matrix" in printed
    assert ["gold \\ predicted", *ev["confusion"]["labels"]] in rows
    for label, counts in zip(ev["confusion"]["labels"], ev["confusion"]["matrix"], strict=True):
        assert [label, *map(str, counts)] in rows
    assert sum(map(sum, ev["confusion"]["matrix"])) == 12

    # The same dataset by id, as JSON: stdout is exactly the stored evaluation.
    again = json.loads(ok(tailor(server, "evaluate", "-m", "crisis:1", "--dataset",
                                 ev["dataset_id"], "--json")))
    assert again == trainer.get(f"/evaluations/{again['id']}").json()
    assert (again["version"], again["dataset_id"]) == (1, ev["dataset_id"])
    shown = ok(tailor(server, "evaluations", "show", ev["id"]))
    assert shown == printed.split("\n", 1)[1]  # the same tables, without the upload line

    # Multi-label: micro-F1, no ROC-AUC and no confusion matrix.
    records = [{"text": CRISIS_TEXTS[1], "label": ["flood"]},
               {"text": CRISIS_TEXTS[2], "label": ["fire"]},
               {"text": CRISIS_TEXTS[3], "label": ["storm", "flood"]},
               {"text": CALM_TEXTS[0], "label": []}]
    hazards_ds = trainer.post("/datasets", json={"name": "hazards-gold",
                                                 "records": records}).json()["id"]
    multi = ok(tailor(server, "evaluate", "-m", "hazards", "--dataset", hazards_ds))
    assert "micro-F1" in multi and "ROC-AUC" not in multi and "confusion" not in multi

    listed = json.loads(ok(tailor(server, "evaluations", "list", "-m", "crisis", "--json")))
    assert listed == trainer.get("/evaluations", params={"model": "crisis"}).json()
    assert [e["id"] for e in listed["evaluations"]] == [again["id"], ev["id"]]
    table = ok(tailor(server, "evaluations", "list"))
    assert all(i in table for i in (again["id"], ev["id"])) and "hazards:1" in table
    one = json.loads(ok(tailor(server, "evaluations", "list", "--limit", "1", "--json")))
    assert len(one["evaluations"]) == 1 and one["next_offset"] == 1
    assert ev["id"] not in ok(tailor(server, "evaluations", "list", "-m", "hazards"))
    # NAME:VERSION is split into the two filters (the API takes a name: 422 otherwise).
    pinned = json.loads(ok(tailor(server, "evaluations", "list", "-m", "crisis:1", "--json")))
    assert pinned == trainer.get("/evaluations", params={"model": "crisis",
                                                         "version": 1}).json()
    assert "query.model" in refused(tailor(server, "evaluations", "list", "-m", "crisis@x"))

    # Another key's evaluation answers like an absent one.
    admins = admin.post("/evaluations", json={"model": "crisis:1",
                                              "dataset_id": ev["dataset_id"]}).json()["id"]
    hidden = refused(tailor(server, "evaluations", "show", admins))
    assert hidden.replace(admins, "X") == refused(
        tailor(server, "evaluations", "show", "ev_absent")).replace("ev_absent", "X")


def test_evaluate_refusals(server: Stack, tmp_path: Path):
    trainer = api(server)
    before = {d["id"] for d in trainer.get("/datasets").json()["datasets"]}
    unknown = write_csv(tmp_path / "meteors.csv", [(CRISIS_TEXTS[0], "crisis"),
                                                   ("a meteor fell", "[bold]meteor")])
    out = refused(tailor(server, "evaluate", "-m", "crisis", str(unknown)))
    assert "[bold]meteor" in out  # the server's words verbatim: brackets are not styling
    assert "(labels_unknown)" in out and "removed again" in out
    assert {d["id"] for d in trainer.get("/datasets").json()["datasets"]} == before

    unlabeled = write_csv(tmp_path / "bare.csv", [(CRISIS_TEXTS[0], "")])
    assert "(dataset_unlabeled)" in refused(tailor(server, "evaluate", "-m", "crisis",
                                                   str(unlabeled)))
    assert "(model_not_found)" in refused(tailor(server, "evaluate", "-m", "ghost",
                                                 "--dataset", "ds_nope"))
    assert "(dataset_not_found)" in refused(tailor(server, "evaluate", "-m", "crisis",
                                                   "--dataset", "ds_nope"))
    assert {d["id"] for d in trainer.get("/datasets").json()["datasets"]} == before
    # Usage errors exit 2: neither or both of FILE and --dataset, no model, no such file.
    assert "either" in refused(tailor(server, "evaluate", "-m", "crisis"), 2)
    assert "either" in refused(tailor(server, "evaluate", "-m", "crisis", str(unknown),
                                      "--dataset", "ds_x"), 2)
    assert "--model" in refused(tailor(server, "evaluate", str(unknown)), 2)
    refused(tailor(server, "evaluate", "-m", "crisis", str(tmp_path / "missing.csv")), 2)


def test_delete_verbs(server: Stack, tiny_models: tuple[str, str]):
    trainer, admin = api(server), api(server, ADMIN)
    ds = trainer.post("/datasets", json={"name": "corpus", "records": [
        {"text": t} for t in corpus(12)]}).json()["id"]
    job = trainer.post("/jobs", json=job_body("doomed", ds, *tiny_models)).json()["id"]

    # Refused while in use / not final, with the server's code; nothing is deleted.
    in_use = refused(tailor(server, "datasets", "delete", ds, "--yes"))
    assert "(dataset_in_use)" in in_use and job in in_use
    assert "(job_not_final)" in refused(tailor(server, "jobs", "delete", job, "--yes"))
    ok(tailor(server, "jobs", "cancel", job))

    # The question comes on stderr; no, or no answer at all, deletes nothing.
    for answer in ("n\n", ""):
        declined = tailor(server, "jobs", "delete", job, answer=answer)
        assert f"Delete job {job} 'doomed' (cancelled)" in refused(declined)
        assert "nothing deleted" in declined.stderr and declined.stdout == ""
        assert trainer.get(f"/jobs/{job}").status_code == 200
    assert f"deleted job {job}" in ok(tailor(server, "jobs", "delete", job, answer="y\n"))
    assert trainer.get(f"/jobs/{job}").status_code == 404
    assert f"no job with id '{job}'" in refused(tailor(server, "jobs", "delete", job, "--yes"))

    gone = json.loads(ok(tailor(server, "datasets", "delete", ds, "--yes", "--json")))
    assert gone == {"deleted": True, "dataset": {**gone["dataset"], "id": ds, "rows": 12}}
    assert trainer.get(f"/datasets/{ds}").status_code == 404
    # Another key's dataset answers exactly like an absent one, and stays.
    theirs = admin.post("/datasets", json={"name": "admins", "records": [
        {"text": "flood"}]}).json()["id"]
    hidden = refused(tailor(server, "datasets", "delete", theirs, "--yes"))
    assert hidden.replace(theirs, "X") == refused(
        tailor(server, "datasets", "delete", ds, "--yes")).replace(ds, "X")
    assert admin.get(f"/datasets/{theirs}").status_code == 200

    # Versions: archived and unaliased only, admin only, NAME:VERSION only.
    assert "(version_not_archived)" in refused(
        tailor(server, "models", "delete", "crisis:1", "--yes", key=ADMIN))
    assert admin.post("/models/crisis/versions/1/archive").status_code == 200
    assert "(forbidden)" in refused(tailor(server, "models", "delete", "crisis:1", "--yes"))
    assert "NAME:VERSION" in refused(tailor(server, "models", "delete", "crisis", "--yes",
                                            key=ADMIN), 2)
    declined = tailor(server, "models", "delete", "crisis:1", key=ADMIN, answer="no\n")
    assert "Delete version crisis:1 (archived) and its files?" in refused(declined)
    version = json.loads(ok(tailor(server, "models", "delete", "crisis:1", "--yes", "--json",
                                   key=ADMIN)))
    assert version["deleted"] is True
    assert (version["version"]["name"], version["version"]["version"]) == ("crisis", 1)
    assert admin.get("/models/crisis/versions/1").status_code == 404
    assert admin.get("/models/crisis/versions/2").status_code == 200
    assert "(version_not_found)" in refused(tailor(server, "models", "delete", "crisis:1",
                                                   "--yes", key=ADMIN))
