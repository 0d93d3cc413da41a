"""The `tailor` command line against a real embedded Tailor started by `tailor serve`, with API
keys on. Every command runs as its own process through the installed `tailor` script."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.tiny import corpus
from tests.integration.lifecycle import EVAL
from tests.support import Stack, free_port, job_body, make_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TAILOR = str(Path(sys.executable).with_name("tailor"))
KEY = "cli-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("cli") / "home"
    home.mkdir()
    stack = Stack(home, make_env(home, TAILOR_API_KEYS=KEY))
    stack.start_serve([TAILOR, "serve"])  # API + one worker
    yield stack
    stack.discard()


def tailor(server: Stack, *args: str, key: str | None = KEY, **env: str
           ) -> subprocess.CompletedProcess[str]:
    environ = {**server.env, "TAILOR_URL": server.url, "COLUMNS": "200", **env}
    environ.pop("TAILOR_API_KEY", None)
    if key is not None:
        environ["TAILOR_API_KEY"] = key
    return subprocess.run([TAILOR, *args], env=environ, capture_output=True, text=True,
                          timeout=240, cwd=server.home)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dataset_id(output: str) -> str:
    match = re.search(r"dataset (ds_\w+)", output)
    assert match, output
    return match.group(1)


def api(server: Stack) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {KEY}"})


def spec_file(tmp_path: Path, tiny_models: tuple[str, str]) -> Path:
    spec: dict[str, Any] = job_body("crisis", "", *tiny_models)
    del spec["data"]  # given by flags below: flags lay over the file
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_upload_submit_watch_registry_and_classify(server: Stack, tiny_models, tmp_path):
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                   for t in corpus(48)))
    with (tmp_path / "eval.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *EVAL])
    ds = dataset_id(ok(tailor(server, "datasets", "upload", str(tmp_path / "corpus.jsonl"))))
    up = ok(tailor(server, "datasets", "upload", str(tmp_path / "eval.csv"), "--name", "eval"))
    assert "4 rows, 4 labeled" in up
    ev = dataset_id(up)

    submitted = ok(tailor(server, "jobs", "submit", str(spec_file(tmp_path, tiny_models)),
                          "--dataset", ds, "--eval-dataset", ev))
    job_id = re.search(r"submitted job (job_\w+)", submitted).group(1)
    watched = ok(tailor(server, "jobs", "watch", job_id))
    for needle in ("annotating", "distilling", "succeeded", "crisis:1 registered",
                   "teacher vs student", "macro-F1", "prompts kept"):
        assert needle in watched, f"{needle!r} missing from:\n{watched}"
    job = api(server).get(f"/jobs/{job_id}").json()
    assert job["spec"]["data"] == {"dataset_id": ds, "eval_dataset_id": ev}
    assert job["spec"]["distillation"]["epochs"] == 2  # from the spec file

    listed = json.loads(ok(tailor(server, "jobs", "list", "--json")))  # one JSON document
    assert [job["state"] for job in listed["jobs"]] == ["succeeded"]
    assert "crisis" in ok(tailor(server, "models", "list"))
    shown = ok(tailor(server, "models", "show", "crisis:1"))
    assert "teacher vs student" in shown and "per class" in shown
    assert f"trained by job {job_id}" in shown
    assert "corpus_too_small" in watched and "warning(s)" in watched  # a 48-text corpus
    assert "corpus_too_small" in shown
    refused = tailor(server, "models", "alias", "crisis", "production", "1")
    assert refused.returncode == 1 and "--force" in refused.stderr, refused
    assert "corpus_too_small" in refused.stderr
    assert "production" in ok(tailor(server, "models", "alias", "crisis", "production", "1",
                                     "--force"))
    assert api(server).get("/models/crisis").json()["aliases"] == {"production": 1}
    assert "production" in ok(tailor(server, "models", "show", "crisis"))

    texts = ["earthquake killed thousands", "stock market rose today", "flood"]
    expected = api(server).post("/classify", json={"model": "crisis@production",
                                                   "texts": texts}).json()["results"]
    table = ok(tailor(server, "classify", "--model", "crisis@production", *texts[:2]))
    assert texts[0] in table and expected[0]["label"] in table
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    lines = ok(tailor(server, "classify", "-m", "crisis@production", "--file",
                      str(tmp_path / "texts.txt"), "--batch", "2")).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row["version"] == 1 and row["scores"] == pytest.approx(want["scores"], abs=1e-6)

    refused = tailor(server, "jobs", "cancel", job_id)
    assert refused.returncode == 1 and f"job {job_id} is already succeeded" in refused.stderr


def test_failures_print_the_server_message_and_exit_non_zero(server: Stack, tiny_models,
                                                             tmp_path):
    wrong = tailor(server, "models", "list", key="not-the-key")
    assert wrong.returncode == 1 and "unknown API key" in wrong.stderr
    missing = tailor(server, "models", "show", "ghost")
    assert missing.returncode == 1 and "no model named 'ghost'" in missing.stderr
    down = tailor(server, "--url", f"http://127.0.0.1:{free_port()}", "jobs", "list")
    assert down.returncode == 1 and "cannot reach Tailor" in down.stderr

    # The key from a config file, when neither flag nor environment gives one.
    config = tmp_path / "tailor.toml"
    config.write_text(f'url = "{server.url}"\napi_key = "{KEY}"\n')
    assert tailor(server, "models", "list", key=None, TAILOR_CONFIG=str(config)).returncode == 0
    assert tailor(server, "models", "list", key=None).returncode == 1
    flag_wins = tailor(server, "--api-key", "bad", "models", "list")
    assert flag_wins.returncode == 1 and "unknown API key" in flag_wins.stderr

    # Too few texts to train on: refused at submission, with the server's message.
    small = api(server).post("/datasets", json={"name": "tiny", "records": [
        {"text": "flood"}, {"text": "calm day"}]}).json()["id"]
    out = tailor(server, "jobs", "submit", "--name", "doomed", "--dataset", small,
                 "--label", "crisis:a disaster", "--label", "calm", "--teacher", tiny_models[0],
                 "--student", tiny_models[1], "--watch")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "at least 4" in out.stderr and "(corpus_too_small)" in out.stderr
    bad_spec = tailor(server, "jobs", "submit", "--name", "Bad Name", "--dataset", small,
                      "--label", "a", "--label", "b")
    assert bad_spec.returncode == 1 and "name" in bad_spec.stderr
