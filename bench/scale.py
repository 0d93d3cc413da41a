"""Scale-out benchmark (`make bench-scale`): one job's annotation on 1, 2 and 4 workers.

Distributed Tailor on real PostgreSQL + Redis (scripts/services.sh starts throwaway servers;
this script reads their URLs from TAILOR_TEST_DATABASE_URL / TAILOR_TEST_REDIS_URL), an API
process and N Celery workers (`python -m worker`, one job slot each, one torch thread each).
The teacher is tests/fixtures/latency_teacher.py: an OpenAI-compatible server that answers
every request after a fixed latency, however many are in flight, the way a big model behind
vLLM does on its own GPUs. Each run gets a fresh database, Redis and TAILOR_HOME (so an
empty teacher cache), uploads the same corpus (the first N distinct messages of the
disaster-response corpus), submits one job and waits for it.

Measured per run, from the job's own metrics:
- `texts_per_s`: teacher texts scored / seconds spent in teacher passes (the annotation's
  `texts_scored` and `seconds`: wall time of every pass, waiting for shards included);
- `annotate_phase_*`: the whole annotation stage, from the job's first `annotating` event
  to its first `distilling` one (the passes plus fetching, judging, calibration), per
  corpus text;
- `job_*`: submission-independent whole-job wall time (claimed -> finished), training and
  evaluation of the student included (the tiny fixture student: training is not what
  this benchmark is about, and a real one would take minutes that sharding does not touch);
- the teacher requests each worker sent (each worker has its own API key), from the server.

`python bench/scale.py --texts 3000 --workers 1,2,4 --latency-ms 100` (`make bench-scale`)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from scripts.fetch_assets import fetch_corpus  # noqa: E402
from tests.fixtures.tiny import build_student  # noqa: E402
from tests.support import Stack, free_port, job_body, make_env, wait_for, wait_job  # noqa: E402

TARGETS = {2: 1.8, 4: 3.2}  # issue 16: texts/s speedup over one worker


def load_corpus(n: int) -> list[str]:
    """The first `n` distinct non-empty messages of the corpus, in file order."""
    out: list[str] = []
    seen: set[str] = set()
    with fetch_corpus().open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            message = row["message"].strip()
            if message and message not in seen:
                seen.add(message)
                out.append(message)
                if len(out) == n:
                    break
    return out


def fresh_database(admin_url: str) -> str:
    name = f"tailor_scale_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def stage_seconds(db: str, job_id: str, stage: str, following: str) -> float | None:
    """Wall seconds from the job's first event in `stage` to its first in `following`."""
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            first = {state: conn.execute(text(
                "SELECT min(created_at) FROM job_events WHERE job_id = :j AND state = :s"),
                {"j": job_id, "s": state}).scalar() for state in (stage, following)}
    finally:
        engine.dispose()
    if first[stage] is None or first[following] is None:
        return None
    return float((first[following] - first[stage]).total_seconds())


def teacher_stats(base: str) -> dict[str, Any]:
    return httpx.get(f"{base}/stats", timeout=30).json()


def run_once(workers: int, corpus: list[str], student: Path, base: str, root: Path,
             epochs: int, shard_texts: int) -> dict[str, Any]:
    """One job on `workers` fresh workers; the row for scale.json."""
    admin = os.environ["TAILOR_TEST_DATABASE_URL"]
    broker = os.environ["TAILOR_TEST_REDIS_URL"]
    redis.Redis.from_url(broker).flushdb()
    db = fresh_database(admin)
    home = root / f"workers-{workers}"
    home.mkdir(parents=True)
    stack = Stack(home, make_env(home, TAILOR_DATABASE_URL=db, TAILOR_BROKER_URL=broker,
                                 TAILOR_MODEL_SOURCES=f"{student.parent},openai+{base}",
                                 TAILOR_TORCH_THREADS="1",
                                 TAILOR_ANNOTATION_SHARD_TEXTS=str(shard_texts)))
    keys = [f"worker-{i}" for i in range(workers)]
    load_before = os.getloadavg()[0]
    try:
        stack.start_api()
        for key in keys:
            stack.start_worker(env={"TAILOR_OPENAI_API_KEY": key})
        with stack.client() as client:
            wait_for(lambda: client.get("/readyz").json().get("workers") == workers, 180,
                     what=f"{workers} workers beating")
            ds = client.post("/datasets", json={"name": "scale",
                                                "records": [{"text": t} for t in corpus]})
            assert ds.status_code == 201, ds.text
            body = job_body("scale", ds.json()["id"], f"openai+{base}/v1?model=fake",
                            str(student), epochs=epochs)
            # The tiny random student would be an embedding labeler at chance.
            body["teacher"]["extra_labelers"] = []
            before = teacher_stats(base)
            resp = client.post("/jobs", json=body)
            assert resp.status_code == 202, resp.text
            job = wait_job(client, resp.json()["id"], timeout=1800)
            after = teacher_stats(base)
        job["annotating_seconds"] = stage_seconds(db, job["id"], "annotating", "distilling")
    except BaseException:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.stop()
        drop_database(admin, db)
    return row(workers, corpus, job, before, after, keys, load_before)


def row(workers: int, corpus: list[str], job: dict[str, Any], before: dict[str, Any],
        after: dict[str, Any], keys: list[str], load_before: float) -> dict[str, Any]:
    m = job.get("metrics") or {}
    ann = m.get("annotation") or {}
    phase_s = job.get("annotating_seconds")
    started, finished = job.get("started_at"), job.get("finished_at")
    job_s = None
    if started and finished:
        job_s = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)
                 ).total_seconds()
    by_key = {k: after["by_key"].get(k, 0) - before["by_key"].get(k, 0) for k in keys}
    scored, seconds = ann.get("texts_scored"), ann.get("seconds")
    return {
        "workers": workers, "state": job["state"], "error": job.get("error"),
        "corpus_texts": len(corpus),
        "texts_per_s": round(scored / seconds, 2) if scored and seconds else None,
        "teacher_texts_scored": scored, "teacher_texts_cached": ann.get("texts_cached"),
        "teacher_pass_seconds": seconds,
        "annotate_phase_seconds": round(phase_s, 2) if phase_s else None,
        "annotate_phase_texts_per_s": round(len(corpus) / phase_s, 2) if phase_s else None,
        "job_seconds": round(job_s, 2) if job_s else None,
        "job_texts_per_s": round(len(corpus) / job_s, 2) if job_s else None,
        "teacher_requests": after["requests"] - before["requests"],
        "requests_by_worker": list(by_key.values()),
        "load_avg_1m_before": round(load_before, 2),
    }


def speedups(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        for key, out in (("texts_per_s", "speedup"), ("annotate_phase_texts_per_s",
                                                      "annotate_phase_speedup"),
                         ("job_texts_per_s", "job_speedup")):
            ok = base and base.get(key) and r.get(key)
            r[out] = round(r[key] / base[key], 2) if ok else None  # type: ignore[index]
        target = TARGETS.get(r["workers"])
        r["target_speedup"] = target
        r["target_met"] = None if target is None or r["speedup"] is None else \
            r["speedup"] >= target


def write(out: Path, stem: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Scale-out: one job's annotation on 1, 2 and 4 workers", "",
        f"Command: `{meta['command']}`. Machine: {meta['machine']}.",
        f"Date: {meta['date']}. Teacher: tests/fixtures/latency_teacher.py, an "
        f"OpenAI-compatible server answering each request after {meta['latency_ms']:g} ms "
        "(concurrent requests allowed); each worker keeps 8 requests in flight "
        "(OpenAITeacher). Distributed Tailor: PostgreSQL + Redis, an API process and N "
        "`python -m worker` processes (one job slot, one torch thread each); a fresh "
        "database, Redis and teacher cache per run. Corpus: the first "
        f"{meta['corpus_texts']} distinct messages of the disaster-response corpus; "
        f"student: the tiny fixture BERT ({meta['epochs']} epoch), so whole-job time is "
        "mostly annotation. Shards of TAILOR_ANNOTATION_SHARD_TEXTS="
        f"{meta['shard_texts']} texts.", "",
        "`texts/s` is the teacher phase: texts the teacher scored / wall seconds of the "
        "teacher passes (waiting for shards included). `phase` adds judging, calibration and "
        "the other annotation work around the passes; `job` is claim to finish (training "
        "and evaluation included). The 1-minute load average before each run shows what "
        "else was using the 2 shared cores.", "",
        "| workers | state | teacher texts | texts/s | speedup | target | annotate phase s "
        "| phase speedup | job s | job speedup | requests per worker | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = "" if r["target_speedup"] is None else (
            f">= {r['target_speedup']}x: {'met' if r['target_met'] else 'MISSED'}")
        lines.append(
            f"| {r['workers']} | {r['state']} | {r['teacher_texts_scored']} | "
            f"{r['texts_per_s']} | {r['speedup']}x | {target} | "
            f"{r['annotate_phase_seconds']} | {r['annotate_phase_speedup']}x | "
            f"{r['job_seconds']} | {r['job_speedup']}x | "
            f"{', '.join(str(n) for n in r['requests_by_worker'])} | "
            f"{r['load_avg_1m_before']} |")
    failed = [r for r in rows if r["state"] != "succeeded"]
    for r in failed:
        lines.append(f"\nRun on {r['workers']} workers ended {r['state']}: {r['error']}")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shard-texts", type=int,
                        default=Settings.model_fields["annotation_shard_texts"].default,
                        help="TAILOR_ANNOTATION_SHARD_TEXTS of the workers (default: its "
                        "default)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--stem", default="scale", help="result files: OUT/STEM.json, .md")
    args = parser.parse_args()
    for var in ("TAILOR_TEST_DATABASE_URL", "TAILOR_TEST_REDIS_URL"):
        if not os.environ.get(var):
            sys.exit(f"{var} is not set: run through `make bench-scale` "
                     "(scripts/services.sh starts PostgreSQL and Redis)")
    corpus = load_corpus(args.texts)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="tailor-scale-") as tmp:
        root = Path(tmp)
        student = build_student(root / "models" / "student")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = Stack(root, make_env(root)).spawn("teacher", [
            sys.executable, "-m", "tests.fixtures.latency_teacher", "--port", str(port),
            "--latency-ms", str(args.latency_ms)])
        try:
            wait_for(lambda: httpx.get(f"{base}/stats", timeout=2).status_code == 200, 60,
                     what="teacher server")
            rows = []
            for n in counts:
                started = time.monotonic()
                rows.append(run_once(n, corpus, student, base, root, args.epochs,
                                     args.shard_texts))
                print(f"{n} workers: {json.dumps(rows[-1])} ({time.monotonic() - started:.0f} s)",
                      flush=True)
        finally:
            server.stop()
    speedups(rows)
    meta = {
        "command": f"python bench/scale.py --texts {args.texts} --workers {args.workers} "
                   f"--latency-ms {args.latency_ms:g} --epochs {args.epochs} "
                   f"--shard-texts {args.shard_texts} --stem {args.stem}",
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, Python "
                   f"{platform.python_version()}",
        "date": datetime.now().isoformat(timespec="seconds"),
        "latency_ms": args.latency_ms, "corpus_texts": len(corpus), "epochs": args.epochs,
        "shard_texts": args.shard_texts,
    }
    write(args.out, args.stem, meta, rows)
    print((args.out / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
