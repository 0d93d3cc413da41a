"""The `tailor` command line never half-writes, says what is wrong in one line, prints the
server's messages verbatim and gives one JSON document for --json (issue 11, kind 8).

Each command runs as its own process of the installed `tailor` script, against a real
`tailor serve --no-worker` on an embedded home where a tiny student version is registered.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.tiny import corpus
from tests.integration.report import record, record_input
from tests.support import Stack, embedded_home, make_env

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
TAILOR = str(Path(sys.executable).with_name("tailor"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[Stack]:
    """One API for the module (starting it is the slow part): the classify test only reads
    crisis:1, the other adds datasets and queued jobs that nothing here lists but itself."""
    from tests.fixtures.versions import register_tiny

    root = tmp_path_factory.mktemp("cli-inputs")
    with pytest.MonkeyPatch.context() as mp, embedded_home(root, mp) as home:
        register_tiny(tiny_models[1], name="crisis")  # the same home the server below opens
    stack = Stack(home, make_env(home))
    stack.start_serve([TAILOR, "serve", "--no-worker"], ready_path="/healthz")
    yield stack
    stack.discard()


def tailor(server: Stack | None, *args: str, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {**(server.env if server else make_env(Path("/nonexistent"))), "COLUMNS": "200"}
    if server:
        env["TAILOR_URL"] = server.url
    return subprocess.run([TAILOR, *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and proc.stdout == ""
    return lines[0]


def write_csv(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text",), *[(t,) for t in texts]])
    return path


def test_classify_writes_the_whole_file_or_nothing(server: Stack, tmp_path):
    texts = corpus(80)
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    bad_inputs = {
        # the example: an empty text in row 70 (after 64 would have been written)
        "empty-row-70.csv": (texts[:69] + [""] + texts[70:], "line 71 (row 70)"),
        "invisible.csv": (texts[:10] + ["\u200b\u2060 \u00a0"] + texts[11:], "line 12 (row 11)"),
    }
    for name, (rows, where) in bad_inputs.items():
        line = one_line_error(tailor(server, "classify", "-m", "crisis", "-f",
                                     str(write_csv(tmp_path / name, rows)), "-o", str(out),
                                     "--batch", "8"), 1)
        assert where in line and "nothing was sent" in line, line
    jsonl = tmp_path / "surrogate.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:40])
                     + '\n{"text": "Flood \\ud83d hits town"}\n')
    line = one_line_error(tailor(server, "classify", "-m", "crisis", "-f", str(jsonl),
                                 "-o", str(out)), 1)
    assert "surrogate.jsonl line 42" in line and "not valid Unicode" in line
    # A text only the server refuses (over its length limit), after 8 batches succeeded:
    # the server's message, verbatim, with the file row it came from.
    long_rows = texts[:66] + ["x" * 20_001] + texts[67:]
    line = one_line_error(tailor(server, "classify", "-m", "crisis", "-f",
                                 str(write_csv(tmp_path / "long.csv", long_rows)),
                                 "-o", str(out), "--batch", "8"), 1)
    assert "long.csv line 68 (row 67): texts[2]" in line and "20001" in line, line
    assert out.read_text() == "previous results\n"  # untouched by every failed run
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")] == []

    ok = tailor(server, "classify", "-m", "crisis", "-f",
                str(write_csv(tmp_path / "good.csv", texts)), "-o", str(out), "--batch", "8")
    assert ok.returncode == 0, ok.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts and all(r["version"] == 1 for r in rows)
    record(20, "CLI classify --file -o with a bad row", "empty row 70 of 80, invisible-only "
           "text, lone surrogate, a text over the server's limit after 8 good batches",
           ["exit 1 with one line naming the file line and row", "output file untouched, "
            "no temporary file left", "a good file replaces it whole"],
           {"rows": len(texts), "lines_written_on_failure": 0})
    record_input("the CLI's input files (classify --file)", ["tailor classify -f ... -o"],
                 ["empty text in row 70", "zero-width/no-break spaces only",
                  "lone surrogate in JSONL", "text over the server limit at row 67"],
                 ["nothing written; one line naming the row", "server message verbatim"])


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    cases = [
        (["classify", "fine"], "Missing option '--model'"),                  # missing option
        (["clasify", "-m", "x", "y"], "No such command 'clasify'"),          # unknown command
        (["jobs", "frobnicate"], "No such command 'frobnicate'"),
        (["classify", "-m", "x", "-f", str(tmp_path / "missing.csv")], "missing.csv"),
        (["jobs", "submit", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["datasets", "upload", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["jobs", "list", "--limit", "many"], "'--limit'"),
        (["classify", "-m", "x"], "TEXT arguments or --file"),
        (["classify", "-m", "x", "-f", str(write_csv(tmp_path / "a.csv", ["a"])),
          "-o", str(tmp_path / "no-such-dir" / "out.jsonl")], "no-such-dir"),
    ]
    for args, needle in cases:
        line = one_line_error(tailor(None, *args), 2)
        assert needle in line, (args, line)
    record_input("CLI usage errors", ["tailor"], [" ".join(a[:2]) for a, _ in cases],
                 ["exit 2, one line on stderr, no traceback"])


def test_server_text_is_printed_verbatim_and_json_is_one_document(server: Stack, tiny_models,
                                                                  tmp_path):
    # Square brackets in what the server says are text, not Rich markup.
    line = one_line_error(tailor(server, "models", "show", "ghost[bold]x"), 1)
    assert "ghost[bold]x" in line, line
    line = one_line_error(tailor(server, "classify", "-m", "[red]ghost[/red]", "flood"), 1)
    assert "[red]ghost[/red]" in line, line
    with server.client() as api:
        ds = api.post("/datasets", json={"name": "news [draft] :fire:", "records": [
            {"text": t} for t in corpus(6)]}).json()["id"]
        body = {"task": {"labels": [{"name": "crisis"},
                                    {"name": "calm", "verbalizer": "none"}]},
                "teacher": {"model": tiny_models[0]}, "student": {"model": tiny_models[1]},
                "data": {"dataset_id": ds}}
        for name in ("first", "second"):  # no worker: they stay queued
            assert api.post("/jobs", json={**body, "name": name}).status_code == 202
    listed = tailor(server, "datasets", "list")
    assert "news [draft] :fire:" in listed.stdout, listed.stdout
    proc = tailor(server, "jobs", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)  # one document, not JSON lines
    assert [j["name"] for j in document["jobs"]] == ["second", "first"]
    assert all(j["state"] == "queued" for j in document["jobs"])
    record_input("server text with markup-like brackets, printed by the CLI",
                 ["tailor models show", "tailor classify", "tailor datasets list"],
                 ["ghost[bold]x", "[red]ghost[/red]", "news [draft] :fire:"],
                 ["printed verbatim", "jobs list --json is one JSON document"])
