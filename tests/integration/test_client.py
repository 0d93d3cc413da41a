"""The Python client (`tailor.Client`) against a real embedded Tailor started by
`tailor serve` (API + one worker, SQLite, filesystem broker), with API keys on: the README's
example verbatim, every client call (evaluations and deletes included), the train scope, and
the job specs under examples/ (dry runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailor import Client, JobFailed, TailorError
from tailor.specs import load_spec
from tests.fixtures.tiny import CALM_TEXTS, CRISIS_TEXTS, corpus
from tests.support import ROOT, Stack, embedded_home, free_port, make_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TAILOR = str(Path(sys.executable).with_name("tailor"))
ADMIN, TRAINER, READER = "client-admin", "client-trainer", "client-reader"
MAX_TEXTS = 4  # the server's texts per /classify request: small, so lists must be split
MAX_EXPLAIN_TEXTS = 2  # the same with explain: true


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[Stack]:
    """`tailor serve` whose default teacher and student are the tiny models (so specs that
    name no model, as README's and examples/ do, run here), with versions news:1 and
    scratch:1 (labels crisis, calm)."""
    from tests.fixtures.versions import register_tiny

    root = tmp_path_factory.mktemp("client")
    with pytest.MonkeyPatch.context() as mp, embedded_home(root, mp) as home:
        register_tiny(tiny_models[1], name="news")
        register_tiny(tiny_models[1], name="scratch", seed=4)  # evaluated, then deleted
    stack = Stack(home, make_env(home, TAILOR_API_KEYS=f"{ADMIN}:admin,{TRAINER}:train,"
                                                      f"{READER}:classify",
                                 TAILOR_DEFAULT_TEACHER=tiny_models[0],
                                 TAILOR_DEFAULT_STUDENT=tiny_models[1],
                                 TAILOR_MAX_CLASSIFY_TEXTS=str(MAX_TEXTS),
                                 TAILOR_MAX_EXPLAIN_TEXTS=str(MAX_EXPLAIN_TEXTS)))
    stack.start_serve([TAILOR, "serve"])
    yield stack
    stack.discard()


def readme_example() -> str:
    """The first python block of README's "Python client" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python client section has no python block"
    return match.group(1)


def test_readme_example_runs_verbatim_with_a_train_key(server: Stack):
    code = readme_example()
    assert len(code.splitlines()) <= 12
    env = {**server.env, "TAILOR_URL": server.url, "TAILOR_API_KEY": TRAINER,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{server.logs()}"
    lines = proc.stdout.splitlines()
    assert any(line.startswith("annotating ") for line in lines), proc.stdout
    assert lines[-1].startswith("{'name': 'crisis-py', 'version': 1}"), proc.stdout
    labels = eval(lines[-1].split("} ", 1)[1])  # noqa: S307 - our own printed list
    assert len(labels) == 2 and set(labels) <= {"crisis", "not_crisis"}

    # Train scope (issue 15.8): the trainer views and uses what it trained.
    with Client(server.url, TRAINER) as trainer:
        assert "crisis-py" in {m["name"] for m in trainer.models.list()}
        version = trainer.models.get("crisis-py", 1)
        assert version["labels"] == ["crisis", "not_crisis"]
        assert version["lineage"]["data"]["corpus_texts"] == 30  # examples/messages.csv
        assert "crisis-py" in trainer.models.card("crisis-py", 1)
        with pytest.raises(TailorError) as refused:  # moving aliases stays an admin's act
            trainer.models.alias("crisis-py", "production", 1, force=True)
        assert refused.value.status == 403
    with Client(server.url, READER) as reader:
        assert len(reader.classify("crisis-py", ["flood"])["results"]) == 1
        with pytest.raises(TailorError) as refused:
            reader.jobs.list()
        assert refused.value.status == 403 and refused.value.code == "forbidden"


def test_client_calls_and_errors(server: Stack, tmp_path: Path):
    client = Client(server.url, ADMIN)
    texts = corpus(11)
    # Eleven texts, four per request: results in order, one version for all of them.
    whole = client.classify("news", texts)
    assert client.max_texts == MAX_TEXTS  # learnt from the server's 413
    assert whole["model"] == "news" and whole["version"] == 1
    alone = [client.classify("news:1", [t])["results"][0] for t in texts]
    assert [r["label"] for r in whole["results"]] == [r["label"] for r in alone]
    for got, want in zip(whole["results"], alone, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    threes = client.classify("news", texts, batch_size=3)["results"]
    assert [r["label"] for r in threes] == [r["label"] for r in whole["results"]]
    # Explained texts have a lower limit (a 422 `too_many_to_explain` states it): split too.
    explained = client.classify("news", texts[:5], explain=True)["results"]
    assert client.max_explain_texts == MAX_EXPLAIN_TEXTS and client.max_texts == MAX_TEXTS
    assert [r["label"] for r in explained] == [r["label"] for r in whole["results"][:5]]
    assert all(r["explanation"]["tokens"] for r in explained)
    with pytest.raises(TailorError) as bad:
        client.classify("news", texts[:9] + [" "] + texts[9:])
    assert bad.value.status == 422 and bad.value.details["index"] == 9
    assert bad.value.details["field"] == "texts[1]"  # the server's words, verbatim
    with pytest.raises(TailorError) as missing:
        client.classify("ghost", ["flood"])
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")

    # Datasets: records (texts or dicts), and a CSV file with another label column.
    records = client.datasets.upload(["flood in town", {"text": "calm day", "label": "calm"}],
                                     name="mixed")
    assert (records["name"], records["rows"], records["labeled_rows"]) == ("mixed", 2, 1)
    csv_file = tmp_path / "eval.csv"
    csv_file.write_text("text,kind\nflood,crisis\nmarket,calm\n")
    labeled = client.datasets.upload(csv_file, label_column="kind")
    assert labeled["name"] == "eval" and labeled["labels"] == ["calm", "crisis"]
    assert client.datasets.get(labeled["id"])["sha256"] == labeled["sha256"]
    assert {records["id"], labeled["id"]} <= {d["id"] for d in client.datasets.list()}
    with pytest.raises(TailorError) as wrong:
        client.datasets.upload(tmp_path / "eval.xlsx")
    assert (wrong.value.status, wrong.value.code) == (None, "unsupported_file")

    # Jobs: idempotent submission, cancel, and wait raising the job's own error.
    corpus_ds = client.datasets.upload(corpus(12), name="corpus")
    spec = {"name": "short-lived", "data": {"dataset_id": corpus_ds["id"]},
            "task": {"labels": [{"name": "crisis"}, {"name": "calm", "verbalizer": "none"}]}}
    job = client.jobs.create(spec, idempotency_key="client-test-1")
    assert client.jobs.create(spec, idempotency_key="client-test-1")["id"] == job["id"]
    with pytest.raises(TailorError) as in_use:  # the job is not final yet
        client.datasets.delete(corpus_ds["id"])
    assert (in_use.value.status, in_use.value.code) == (409, "dataset_in_use")
    assert in_use.value.details == {"jobs": [job["id"]]}
    with pytest.raises(TailorError) as running:
        client.jobs.delete(job["id"])
    assert (running.value.status, running.value.code) == (409, "job_not_final")
    assert client.jobs.cancel(job["id"])["cancel_requested"] is True
    seen: list[str] = []
    with pytest.raises(JobFailed) as failed:
        client.jobs.wait(job["id"], on_progress=lambda e: seen.append(e["state"]), timeout=120)
    assert failed.value.job["state"] == "cancelled" and failed.value.code == "cancelled"
    assert seen[0] == "queued" and seen[-1] == "cancelled"  # every event, in order
    assert job["id"] in {j["id"] for j in client.jobs.list(state="cancelled")}
    with pytest.raises(TailorError) as final:
        client.jobs.cancel(job["id"])
    assert final.value.status == 409
    with pytest.raises(TailorError) as absent:
        client.jobs.wait("job_nope")
    assert absent.value.status == 404
    # Once final, the job and then its dataset go.
    assert client.jobs.delete(job["id"]) is None
    with pytest.raises(TailorError) as deleted:
        client.jobs.get(job["id"])
    assert (deleted.value.status, deleted.value.code) == (404, "not_found")
    assert client.datasets.delete(corpus_ds["id"]) is None
    assert corpus_ds["id"] not in {d["id"] for d in client.datasets.list()}

    # Registry calls that need admin.
    assert client.models.archive("news", 1)["archived"] is True
    assert "news" not in {m["name"] for m in client.models.list()}
    assert client.models.get("news", include_archived=True)["versions"][0]["version"] == 1
    assert client.models.unarchive("news", 1)["archived"] is False
    assert client.models.alias("news", "production", 1) == {
        "name": "news", "alias": "production", "version": 1}
    with pytest.raises(TailorError) as aliased:
        client.models.archive("news", 1)
    assert (aliased.value.status, aliased.value.code) == (409, "version_aliased")
    assert aliased.value.details == {"aliases": ["production"]}
    # Exporting an unknown version: a 404 as TailorError, and no file left behind.
    target = tmp_path / "crisis.onnx"
    with pytest.raises(TailorError) as no_export:
        client.models.export("news", 99, "onnx", target)
    assert no_export.value.status == 404
    assert list(tmp_path.glob("*.onnx*")) == [] and not list(tmp_path.glob(".crisis*"))

    with pytest.raises(TailorError) as unknown_key:
        Client(server.url, "not-a-key").models.list()
    assert unknown_key.value.status == 401
    with pytest.raises(TailorError) as down:
        Client(f"http://127.0.0.1:{free_port()}", ADMIN, timeout=5).models.list()
    assert down.value.status is None and down.value.code == "connection_error"
    client.close()


@pytest.mark.parametrize("spec_name, label_column", [
    ("crisis-binary.yaml", "crisis"), ("crisis-type.yaml", "type"),
    ("hazards-multilabel.yaml", "hazards")])
def test_example_specs_are_accepted_with_their_eval_sets(server: Stack, spec_name, label_column):
    csv_path = ROOT / "examples" / "messages.csv"
    with Client(server.url, TRAINER) as client:
        corpus_ds = client.datasets.upload(csv_path, name="messages")
        eval_ds = client.datasets.upload(csv_path, name=f"{label_column}-eval",
                                         label_column=label_column)
        assert corpus_ds["labeled_rows"] == 0 and eval_ds["labeled_rows"] >= 17
        spec = load_spec(ROOT / "examples" / spec_name)
        assert set(eval_ds["labels"]) <= {label["name"] for label in spec["task"]["labels"]}
        spec["data"] = {"dataset_id": corpus_ds["id"], "eval_dataset_id": eval_ds["id"]}
        assert spec["task"].get("multi_label", False) is (label_column == "hazards")
        # Validated in full, as a submission is; estimated; nothing created.
        body = client.jobs.create(spec, dry_run=True)
        assert body["dry_run"] is True
        estimate = body["estimate"]
        assert set(estimate) == {"texts", "teacher_calls", "training_steps", "phases",
                                 "seconds", "basis", "rates"}
        assert estimate["texts"] == corpus_ds["rows"] + eval_ds["labeled_rows"]
        assert estimate["teacher_calls"] > 0 and estimate["training_steps"] > 0
        assert set(estimate["phases"]) == {"annotate", "distill", "evaluate"}
        assert estimate["seconds"] == pytest.approx(  # each figure rounded to 0.1 s
            sum(phase["seconds"] for phase in estimate["phases"].values()), abs=0.21)
        assert client.jobs.list(name=spec["name"]) == []


def test_client_evaluations_and_version_delete(server: Stack):
    trainer, admin = Client(server.url, TRAINER), Client(server.url, ADMIN)
    gold = trainer.datasets.upload([*({"text": t, "label": "crisis"} for t in CRISIS_TEXTS[:4]),
                                    *({"text": t, "label": "calm"} for t in CALM_TEXTS[:4]),
                                    "a row without a label"], name="gold")
    ev = trainer.evaluate("scratch", gold["id"], idempotency_key="client-ev-1")
    assert (ev["model"], ev["version"], ev["ref"]) == ("scratch", 1, "scratch")
    assert (ev["dataset_id"], ev["n"], ev["skipped_unlabeled"]) == (gold["id"], 8, 1)
    assert set(ev["per_class"]) == {"crisis", "calm"} and ev["roc_auc"] is not None
    assert sum(map(sum, ev["confusion"]["matrix"])) == 8
    assert trainer.evaluate("scratch", gold["id"], idempotency_key="client-ev-1") == ev
    second = trainer.evaluations.create("scratch:1", gold["id"])
    assert trainer.evaluations.get(ev["id"]) == ev
    assert [e["id"] for e in trainer.evaluations.list(model="scratch")] == [second["id"], ev["id"]]
    page = trainer.evaluations.page(model="scratch", limit=1)
    assert [e["id"] for e in page["evaluations"]] == [second["id"]] and page["next_offset"] == 1
    assert [e["id"] for e in trainer.evaluations.list(
        model="scratch", version=1, dataset_id=gold["id"], offset=1)] == [ev["id"]]
    assert trainer.evaluations.list(model="news") == []
    with pytest.raises(TailorError) as no_dataset:
        trainer.evaluate("scratch", "ds_nope")
    assert (no_dataset.value.status, no_dataset.value.code) == (422, "dataset_not_found")
    with Client(server.url, READER) as reader, pytest.raises(TailorError) as hidden:
        reader.evaluations.get(ev["id"])  # another key's: as if absent
    assert (hidden.value.status, hidden.value.code) == (404, "not_found")
    with pytest.raises(TailorError) as impatient:  # evaluate's own timeout is honoured
        trainer.evaluate("news", gold["id"], timeout=1e-6)  # news: never deleted here
    assert (impatient.value.status, impatient.value.code) == (None, "timeout")

    # A version goes only archived and unaliased, by an admin; its evaluations stay.
    with pytest.raises(TailorError) as live:
        admin.models.delete_version("scratch", 1)
    assert (live.value.status, live.value.code) == (409, "version_not_archived")
    admin.models.archive("scratch", 1)
    with pytest.raises(TailorError) as trainer_refused:
        trainer.models.delete_version("scratch", 1)
    assert trainer_refused.value.status == 403
    assert admin.models.delete_version("scratch", 1) is None
    with pytest.raises(TailorError) as gone:
        admin.models.get("scratch", 1)
    assert gone.value.status == 404
    with pytest.raises(TailorError) as unserved:
        trainer.classify("scratch:1", ["flood"])
    assert unserved.value.status == 404
    assert trainer.evaluations.get(ev["id"])["version"] == 1

    # Datasets: the owner deletes; another key's answers like an absent one.
    theirs = admin.datasets.upload(["flood"], name="admins")
    with pytest.raises(TailorError) as not_mine:
        trainer.datasets.delete(theirs["id"])
    assert (not_mine.value.status, not_mine.value.code) == (404, "not_found")
    assert admin.datasets.get(theirs["id"])["id"] == theirs["id"]
    assert trainer.datasets.delete(gold["id"]) is None
    with pytest.raises(TailorError) as deleted:
        trainer.datasets.get(gold["id"])
    assert deleted.value.status == 404
    trainer.close()
    admin.close()
