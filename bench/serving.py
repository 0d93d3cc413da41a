"""Serving benchmark: Tailor's /classify (torch and ONNX backends) against the hardware's own
limit for the same student, a naive per-request server and the teacher.

Needs a real student: by default the `crisis` model a small demo run registered in
var/bench-demo (`make bench-serving` creates it; with `--quick` and no demo home, a student
trained in seconds on a few headlines stands in). Copies that home (so version 1 keeps its
job and corpus: its held-out texts decide int8) and registers 19 more copies of the version,
then, one process at a time, on 127.0.0.1 only:
  1. in-process limits: the student at batch 32 with no HTTP, per backend and precision
     (torch, onnx fp32, onnx int8) at the server's model threads and at all cores;
  2. Tailor /classify with TAILOR_SERVING_BACKEND torch and onnx, and the naive server, at
     concurrency 1, 8, 32, with one text per request and with 32 texts per request; then
     py-spy samples each Tailor under c=32 to show where its time goes;
  3. the teacher at concurrency 1, 8, 32 (not with --quick);
  4. Tailor's RSS serving 1, 5 and 20 versions of one base;
  5. overload: offered load at 2x Tailor's measured capacity, then recovery.
Writes bench/results/serving.json, serving.md and serving.png (marked when --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import server_profile  # noqa: E402
from bench.inprocess import limits  # noqa: E402
from bench.load import (  # noqa: E402
    closed_loop,
    open_loop,
    percentile_ms,
    server_side,
    summarise,
)
from bench.report import machine, write_report  # noqa: E402

CONCURRENCY = (1, 8, 32)
SHAPES = (1, 32)  # texts per request
VERSIONS = 20
MEMORY_STEPS = (1, 5, 20)
OVERLOAD_FACTOR = 2.0
MAX_REQUESTS = 20_000  # per closed-loop point; time is the usual bound
BACKENDS = ("torch", "onnx")
THROUGHPUT_QUEUE_DELAY_MS = 60_000
QUICK_CORPUS = 400  # the stand-in's corpus: 60 held-out texts, as `make bench-serving`'s demo


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_texts(n: int = 500, seed: int = 0, split: str = "test") -> list[str]:
    """Messages of one split of the disaster-response corpus, shuffled once."""
    csv_path = ROOT / "var" / "data" / "disaster_response_messages.csv"
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        texts = [r["message"] for r in csv.DictReader(fh) if r["split"] == split]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def prepare_home(source: Path, home: Path, model: str, versions: int) -> dict[str, Any]:
    """Copy `source` (database and artifacts: the latest version of `model` keeps its job and
    corpus) to a fresh `home` and register `versions - 1` more copies of that version."""
    os.environ["TAILOR_HOME"] = str(home)
    from sqlalchemy import select

    from app.core.config import get_settings
    from app.core.db import reset_caches, session_scope
    from app.core.migrate import upgrade
    from app.models import ModelVersion
    from app.registry.service import register_version
    from worker.distill.result import RunResult

    reset_caches()  # closes this process's connections: SQLite folds its WAL into the file
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    for db_file in source.glob("tailor.db*"):  # with -wal / -shm when another holds it open
        shutil.copy2(db_file, home / db_file.name)
    shutil.copytree(source / "artifacts", home / "artifacts", symlinks=True,
                    ignore=shutil.ignore_patterns("exports"))  # compile afresh
    get_settings.cache_clear()
    reset_caches()
    upgrade()
    with session_scope() as db:
        row = db.scalars(select(ModelVersion).where(ModelVersion.model_name == model)
                         .order_by(ModelVersion.version.desc()).limit(1)).one()
        first = {"version": row.version, "artifact_path": row.artifact_path,
                 "files": dict(row.files), "metrics": dict(row.metrics),
                 "lineage": dict(row.lineage), "base_model": row.base_model,
                 "job_id": row.job_id}
    artifacts = home / "artifacts"
    numbers = [first["version"]]
    for i in range(2, versions + 1):
        student_dir = artifacts / "bench" / f"copy-{i}" / "student"
        shutil.copytree(artifacts / first["artifact_path"], student_dir)
        result = RunResult(student_dir=student_dir, files=first["files"],
                           metrics=first["metrics"], lineage=first["lineage"],
                           base_model=first["base_model"])
        with session_scope() as db:
            numbers.append(register_version(db=db, job_id=f"bench-copy-{i}", name=model,
                                            result=result, artifacts_root=artifacts))
    lineage_path = home / "lineage.json"
    lineage_path.write_text(json.dumps(first["lineage"]))
    return {"student_dir": artifacts / first["artifact_path"], "lineage": lineage_path,
            "metrics": first["metrics"], "source_job": first["job_id"], "versions": numbers,
            "artifact_path": first["artifact_path"], "files": first["files"],
            "key": f"{model}:{first['version']}"}


def quick_source(home: Path, texts: list[str]) -> Path:
    """A stand-in source home for --quick: the real base student fit in seconds to a few
    labeled headlines (tests/fixtures/real_student.py), registered under a job submitted (never
    run) on `texts` as its corpus, so it has the job's held-out texts as a demo version does."""
    os.environ["TAILOR_HOME"] = str(home)
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from app.core.config import get_settings
    from app.core.db import reset_caches, session_scope
    from app.core.migrate import upgrade
    from app.main import create_app
    from app.models import ModelVersion
    from tests.fixtures.real_student import register_trained

    if home.exists():
        shutil.rmtree(home)
    get_settings.cache_clear()
    reset_caches()
    upgrade()
    with TestClient(create_app()) as client:
        corpus = client.post("/datasets", json={"name": "corpus", "records": [
            {"text": t} for t in texts]}).json()["id"]
        job = client.post("/jobs", json={"name": "crisis", "data": {"dataset_id": corpus},
                                         "task": {"labels": [
                                             {"name": "crisis", "description": "an emergency"},
                                             {"name": "calm", "description": "anything else"}
                                         ]}})
        job.raise_for_status()
    version = register_trained("crisis")
    with session_scope() as db:
        db.execute(update(ModelVersion).where(ModelVersion.version == version)
                   .values(job_id=job.json()["id"]))
    reset_caches()
    return home


def answers(path: str, body: dict[str, Any] | None = None) -> Any:
    """A readiness probe: GET `path` (or POST `body` to it) answers 200."""
    def probe(url: str) -> bool:
        if body is None:
            return httpx.get(url + path, timeout=60).status_code == 200
        return httpx.post(url + path, json=body, timeout=60).status_code == 200

    return probe


class Server:
    """One server process on 127.0.0.1, ready once `probe(url)` is true."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, log: Path,
                 probe: Any, path: str = "/classify") -> None:
        self.name, self.url, self.path = name, f"http://127.0.0.1:{port}", path
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited at start; see {log}")
            try:
                if probe(self.url):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{name} did not become ready; see {log}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time the server process used so far (all its threads, user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def groups(texts: list[str], size: int) -> list[list[str]]:
    """The bench texts as requests of `size` texts each."""
    return [texts[i:i + size] for i in range(0, len(texts) - size + 1, size)]


def throughput(server: Server, texts: list[str], body: Any, seconds: float,
               warmup: float) -> dict[str, Any]:
    """Closed-loop runs per request shape and concurrency, after a warm-up at that point.

    Returns {"1": {c: stats}, "32": {c: stats}} by texts per request; `texts_per_s` counts
    the texts of successful requests."""
    out: dict[str, Any] = {}
    for size in SHAPES:
        requests = groups(texts, size)
        out[str(size)] = {}
        for c in CONCURRENCY:
            asyncio.run(closed_loop(server.url, server.path, requests, body, concurrency=c,
                                    seconds=warmup, max_requests=MAX_REQUESTS))
            cpu = server.cpu_seconds()
            samples, wall = asyncio.run(closed_loop(server.url, server.path, requests, body,
                                                    concurrency=c, seconds=seconds,
                                                    max_requests=MAX_REQUESTS))
            cpu = server.cpu_seconds() - cpu
            stats = summarise(samples, wall)
            # Requests per CPU-second of the server: what the machine's load cannot distort
            # much.
            out[str(size)][str(c)] = {
                **stats, "texts_per_s": round(stats["throughput_rps"] * size, 1),
                "server_cpu_s": round(cpu, 2),
                "ok_per_cpu_s": round(stats["ok"] / max(cpu, 1e-9), 2),
                "load_avg_1m": round(os.getloadavg()[0], 2)}
            print(f"  {server.name} {size} text(s)/request c={c}: {out[str(size)][str(c)]}",
                  flush=True)
    return out


def profile(server: Server, texts: list[str], body: Any, seconds: float, out: Path
            ) -> dict[str, Any]:
    """Where `server`'s time goes at concurrency 32, one text per request (py-spy)."""
    proc = server_profile.start(server.proc.pid, seconds, out)
    asyncio.run(closed_loop(server.url, server.path, groups(texts, 1), body, concurrency=32,
                            seconds=seconds + 1, max_requests=MAX_REQUESTS))
    result = server_profile.summarise(proc, out, max(1, round(seconds)))
    print(f"  {server.name} profile: {result}", flush=True)
    return result


def memory(server: Server, model: str, versions: list[int]) -> dict[str, Any]:
    """RSS and the pool's weight accounting with 0, 1, 5 and 20 versions loaded."""
    def model_bytes() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("tailor_serving_model_bytes"))
        return float(line.split()[-1]) / 2**20

    steps = {"0": {"rss_mb": round(server.rss_mb(), 1), "weights_mb": model_bytes()}}
    loaded = 0
    for n in MEMORY_STEPS:
        for v in versions[loaded:n]:
            r = httpx.post(f"{server.url}/classify", timeout=120,
                           json={"model": f"{model}:{v}", "texts": ["flood warning"]})
            r.raise_for_status()
        loaded = n
        time.sleep(1)
        steps[str(n)] = {"rss_mb": round(server.rss_mb(), 1),
                         "weights_mb": round(model_bytes(), 2)}
    base_rss = steps["1"]["rss_mb"] - steps["0"]["rss_mb"]
    per_version = (steps["20"]["rss_mb"] - steps["1"]["rss_mb"]) / (VERSIONS - 1)
    per_version_weights = (steps["20"]["weights_mb"] - steps["1"]["weights_mb"]) / (VERSIONS - 1)
    base_weights = steps["1"]["weights_mb"] - per_version_weights
    return {"steps": steps, "base_rss_mb": round(base_rss, 1),
            "base_weights_mb": round(base_weights, 2),
            "per_extra_version_rss_mb": round(per_version, 2),
            "per_extra_version_weights_mb": round(per_version_weights, 3),
            "per_extra_version_share_of_base_rss": round(per_version / base_rss, 4),
            "per_extra_version_share_of_base_weights": round(
                per_version_weights / base_weights, 4)}


def overload(server: Server, texts: list[str], body: Any, capacity: float,
             seconds: float) -> dict[str, Any]:
    rate = OVERLOAD_FACTOR * capacity
    texts = groups(texts, 1)
    before = httpx.get(f"{server.url}/metrics").text
    samples, skipped = asyncio.run(open_loop(server.url, "/classify", texts, body, rate=rate,
                                             seconds=seconds, max_outstanding=2000))
    after = httpx.get(f"{server.url}/metrics").text
    ok = [s.latency for s in samples if s.status == 200]
    refused = [s.latency for s in samples if s.status == 429]
    time.sleep(2)
    recovery, wall = asyncio.run(closed_loop(server.url, "/classify", texts, body,
                                             concurrency=8, seconds=5,
                                             max_requests=MAX_REQUESTS))
    return {"offered_rps": round(rate, 1), "seconds": seconds, "sent": len(samples),
            "not_sent_client_bound": skipped, "accepted": len(ok), "refused_429": len(refused),
            "share_429": round(len(refused) / max(1, len(samples)), 4),
            "status_5xx": sum(1 for s in samples if s.status >= 500),
            "transport_errors": sum(1 for s in samples if s.status == 0),
            "accepted_p50_ms": percentile_ms(ok, 50), "accepted_p99_ms": percentile_ms(ok, 99),
            "refused_p50_ms": percentile_ms(refused, 50),
            "refused_p99_ms": percentile_ms(refused, 99),
            "refused_max_ms": percentile_ms(refused, 100),
            "server_side_429": server_side(before, after, "/classify", 429),
            "server_side_200": server_side(before, after, "/classify", 200),
            "recovery_c8": summarise(recovery, wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-home", type=Path, default=ROOT / "var" / "bench-demo")
    parser.add_argument("--model", default="crisis")
    parser.add_argument("--seconds", type=float, default=15.0, help="per measured point")
    parser.add_argument("--quick", action="store_true",
                        help="short points (3 s), no teacher, a stand-in student if there is "
                             "no demo home (the results say quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    warmup = 1.0 if args.quick else 2.0
    work = ROOT / "var" / "bench" / "serving"
    source = args.source_home
    if not (source / "tailor.db").exists():
        if not args.quick:
            raise SystemExit(f"no registered student in {source}: run `scripts/demo.py "
                             f"--train 400 --eval 50 --home {source}` first")
        source = quick_source(work / "quick-source", bench_texts(QUICK_CORPUS, seed=1,
                                                                 split="train"))
    cache = Path(os.environ.get("TAILOR_CACHE_DIR", ROOT / "var" / "cache")).resolve()
    os.environ["TAILOR_CACHE_DIR"] = str(cache)
    info = prepare_home(source, work / "home", args.model, VERSIONS)
    texts = bench_texts()
    env = {**os.environ, "TAILOR_HOME": str(work / "home"), "TAILOR_CACHE_DIR": str(cache),
           "TAILOR_SERVING_MAX_LOADED": str(VERSIONS + 4), "PYTHONUNBUFFERED": "1"}
    cores = os.cpu_count() or 1
    model_threads = max(1, cores - 1)  # Settings.serving_threads' default
    results: dict[str, Any] = {"machine_before": machine(), "quick": args.quick,
                               "seconds_per_point": seconds, "throughput": {}, "profile": {},
                               "student": {"source_job": info["source_job"],
                                           "metrics": info["metrics"].get("student", {})}}
    print("in-process limits", flush=True)
    results["inprocess"] = limits(work / "home", cache, info["key"], info["artifact_path"],
                                  info["files"], texts,
                                  thread_counts=sorted({model_threads, cores}),
                                  seconds=seconds)
    results["inprocess"]["threads"] = {"server_model_thread": model_threads, "cores": cores}
    tailor_body = lambda group: {"model": info["key"], "texts": group}  # noqa: E731
    plain_body = lambda group: {"texts": group}  # noqa: E731
    tailor_cmd = [sys.executable, "-m", "app.serve", "--no-worker", "--port"]
    base_cmd = [sys.executable, "bench/baselines.py"]
    for backend in BACKENDS:
        name, port = f"tailor-{backend}", free_port()
        # The queue's delay bound (2 s by default) would refuse most 32-text requests at c=8
        # and 32 on this machine; the throughput points measure throughput, the overload
        # section below keeps the defaults.
        server = Server(name, tailor_cmd + [str(port)],
                        {**env, "TAILOR_SERVING_BACKEND": backend,
                         "TAILOR_SERVING_MAX_QUEUE_DELAY_MS": str(THROUGHPUT_QUEUE_DELAY_MS)},
                        port, work / f"{name}.log", answers("/classify",
                                                            tailor_body(["flood warning"])))
        try:
            results["throughput"][name] = throughput(server, texts, tailor_body, seconds,
                                                     warmup)
            version = httpx.get(f"{server.url}/models/{args.model}/versions/"
                                f"{info['key'].split(':')[1]}").json()
            results.setdefault("served", {})[name] = version.get("serving") or {
                "precision": "torch"}
            results["profile"][name] = profile(server, texts, tailor_body, seconds,
                                               work / f"{name}.pyspy.txt")
        finally:
            server.stop()
    specs = [("naive", lambda p: base_cmd + ["naive", "--student-dir", str(info["student_dir"]),
                                             "--cache", str(cache), "--port", str(p)],
              plain_body)]
    if not args.quick:
        specs.append(("teacher", lambda p: base_cmd + [
            "teacher", "--student-dir", str(info["student_dir"]), "--lineage",
            str(info["lineage"]), "--cache", str(cache), "--port", str(p)], plain_body))
    for name, cmd, body in specs:
        port = free_port()
        server = Server(name, cmd(port), env, port, work / f"{name}.log",
                        answers("/classify", body(["flood warning"])))
        try:
            results["throughput"][name] = throughput(server, texts, body, seconds, warmup)
        finally:
            server.stop()
    port = free_port()
    server = Server("tailor", tailor_cmd + [str(port)], env, port, work / "tailor-mem.log",
                    answers("/healthz"))
    try:
        results["memory"] = memory(server, args.model, info["versions"])
        capacity = results["throughput"]["tailor-torch"]["1"]["32"]["throughput_rps"]
        results["overload"] = overload(server, texts, tailor_body, capacity,
                                       5.0 if args.quick else 20.0)
    finally:
        server.stop()
    results["machine_after"] = machine()
    results["command"] = ("make bench-serving  (python bench/serving.py "
                          + " ".join(sys.argv[1:]) + ")")
    write_report(results, args.out)


if __name__ == "__main__":
    main()
