"""Serving benchmark: Tailor's /classify vs a naive per-request server vs the teacher.

Needs a real student: by default the `crisis` model a small demo run registered in
var/bench-demo (`make bench-serving` creates it). Registers 20 copies of it as versions of
one model in a fresh home, then, one server process at a time, on 127.0.0.1 only:
  1. throughput and p50/p95/p99 latency at concurrency 1, 8, 32 (one text per request) for
     Tailor, the naive baseline and the teacher (bench/baselines.py), same texts for all;
  2. Tailor's RSS serving 1, 5 and 20 versions of one base;
  3. overload: offered load at 2x Tailor's measured capacity for 20 s, then recovery.
Writes bench/results/serving.json, serving.md and serving.png.
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

from bench.load import (  # noqa: E402
    closed_loop,
    open_loop,
    percentile_ms,
    server_side,
    summarise,
)
from bench.report import machine, write_report  # noqa: E402

CONCURRENCY = (1, 8, 32)
VERSIONS = 20
MEMORY_STEPS = (1, 5, 20)
OVERLOAD_SECONDS, OVERLOAD_FACTOR = 20.0, 2.0
MAX_REQUESTS = 20_000  # per closed-loop point; time is the usual bound


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_texts(n: int = 500, seed: int = 0) -> list[str]:
    """Test-split messages of the disaster-response corpus, shuffled once."""
    csv_path = ROOT / "var" / "data" / "disaster_response_messages.csv"
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        texts = [r["message"] for r in csv.DictReader(fh) if r["split"] == "test"]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def prepare_home(source: Path, home: Path, model: str, versions: int) -> dict[str, Any]:
    """Register `versions` copies of `model`'s latest version from `source` in a fresh home."""
    os.environ["TAILOR_HOME"] = str(home)
    from sqlalchemy import select

    from app.core.db import make_engine, reset_caches, session_scope
    from app.core.migrate import upgrade
    from app.models import ModelVersion
    from app.registry.service import register_version
    from worker.distill.result import RunResult

    src_engine = make_engine(f"sqlite:///{source / 'tailor.db'}")
    with src_engine.connect() as conn:
        row = conn.execute(select(ModelVersion).where(ModelVersion.model_name == model)
                           .order_by(ModelVersion.version.desc()).limit(1)).one()
    src_engine.dispose()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    reset_caches()
    upgrade()
    artifacts = home / "artifacts"
    for i in range(1, versions + 1):
        student_dir = artifacts / "bench" / f"copy-{i}" / "student"
        shutil.copytree(source / "artifacts" / row.artifact_path, student_dir)
        result = RunResult(student_dir=student_dir, files=row.files, metrics=row.metrics,
                           lineage=row.lineage, base_model=row.base_model)
        with session_scope() as db:
            register_version(db=db, job_id=f"bench-copy-{i}", name=model, result=result,
                             artifacts_root=artifacts)
    lineage_path = home / "lineage.json"
    lineage_path.write_text(json.dumps(row.lineage))
    return {"student_dir": artifacts / "bench" / "copy-1" / "student",
            "lineage": lineage_path, "metrics": row.metrics, "source_job": row.job_id}


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
                 probe: Any) -> None:
        self.name, self.url = name, f"http://127.0.0.1:{port}"
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


def throughput(server: Server, texts: list[str], body: Any, seconds: float) -> dict[str, Any]:
    """Closed-loop runs at each concurrency, after a short warm-up at that concurrency."""
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        asyncio.run(closed_loop(server.url, "/classify", texts, body, concurrency=c,
                                seconds=2, max_requests=MAX_REQUESTS))
        cpu = server.cpu_seconds()
        samples, wall = asyncio.run(closed_loop(server.url, "/classify", texts, body,
                                                concurrency=c, seconds=seconds,
                                                max_requests=MAX_REQUESTS))
        cpu = server.cpu_seconds() - cpu
        stats = summarise(samples, wall)
        # Requests per CPU-second of the server: what the machine's load cannot distort much.
        out[str(c)] = {**stats, "server_cpu_s": round(cpu, 2),
                       "ok_per_cpu_s": round(stats["ok"] / max(cpu, 1e-9), 2),
                       "load_avg_1m": round(os.getloadavg()[0], 2)}
        print(f"  {server.name} c={c}: {out[str(c)]}", flush=True)
    return out


def memory(server: Server, model: str) -> dict[str, Any]:
    """RSS and the pool's weight accounting with 0, 1, 5 and 20 versions loaded."""
    def model_bytes() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("tailor_serving_model_bytes"))
        return float(line.split()[-1]) / 2**20

    steps = {"0": {"rss_mb": round(server.rss_mb(), 1), "weights_mb": model_bytes()}}
    loaded = 0
    for n in MEMORY_STEPS:
        for v in range(loaded + 1, n + 1):
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


def overload(server: Server, texts: list[str], body: Any, capacity: float) -> dict[str, Any]:
    rate = OVERLOAD_FACTOR * capacity
    before = httpx.get(f"{server.url}/metrics").text
    samples, skipped = asyncio.run(open_loop(server.url, "/classify", texts, body, rate=rate,
                                             seconds=OVERLOAD_SECONDS, max_outstanding=2000))
    after = httpx.get(f"{server.url}/metrics").text
    ok = [s.latency for s in samples if s.status == 200]
    refused = [s.latency for s in samples if s.status == 429]
    time.sleep(2)
    recovery, wall = asyncio.run(closed_loop(server.url, "/classify", texts, body,
                                             concurrency=8, seconds=5,
                                             max_requests=MAX_REQUESTS))
    return {"offered_rps": round(rate, 1), "seconds": OVERLOAD_SECONDS, "sent": len(samples),
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
    parser.add_argument("--seconds", type=float, default=15.0, help="per concurrency point")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not (args.source_home / "tailor.db").exists():
        raise SystemExit(f"no registered student in {args.source_home}: run `scripts/demo.py "
                         f"--train 200 --eval 50 --home {args.source_home}` first")
    work = ROOT / "var" / "bench" / "serving"
    cache = Path(os.environ.get("TAILOR_CACHE_DIR", ROOT / "var" / "cache")).resolve()
    info = prepare_home(args.source_home, work / "home", args.model, VERSIONS)
    texts = bench_texts()
    env = {**os.environ, "TAILOR_HOME": str(work / "home"), "TAILOR_CACHE_DIR": str(cache),
           "TAILOR_SERVING_MAX_LOADED": str(VERSIONS + 4), "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {"machine_before": machine(), "throughput": {},
                               "student": {"source_job": info["source_job"],
                                           "metrics": info["metrics"].get("student", {})}}
    tailor_body = lambda text: {"model": f"{args.model}:1", "texts": [text]}  # noqa: E731
    plain_body = lambda text: {"texts": [text]}  # noqa: E731
    tailor_cmd = [sys.executable, "-m", "app.serve", "--no-worker", "--port"]
    base_cmd = [sys.executable, "bench/baselines.py"]
    specs = [
        ("tailor", lambda p: tailor_cmd + [str(p)], tailor_body),
        ("naive", lambda p: base_cmd + ["naive", "--student-dir", str(info["student_dir"]),
                                        "--cache", str(cache), "--port", str(p)], plain_body),
        ("teacher", lambda p: base_cmd + ["teacher", "--student-dir", str(info["student_dir"]),
                                          "--lineage", str(info["lineage"]), "--cache",
                                          str(cache), "--port", str(p)], plain_body),
    ]
    for name, cmd, body in specs:
        port = free_port()
        server = Server(name, cmd(port), env, port, work / f"{name}.log",
                        answers("/classify", body("flood warning")))
        try:
            results["throughput"][name] = throughput(server, texts, body, args.seconds)
        finally:
            server.stop()
    port = free_port()
    server = Server("tailor", tailor_cmd + [str(port)], env, port, work / "tailor-mem.log",
                    answers("/healthz"))
    try:
        results["memory"] = memory(server, args.model)
        capacity = results["throughput"]["tailor"]["32"]["throughput_rps"]
        results["overload"] = overload(server, texts, tailor_body, capacity)
    finally:
        server.stop()
    results["machine_after"] = machine()
    results["command"] = "make bench-serving  (python bench/serving.py " + " ".join(
        sys.argv[1:]) + ")"
    write_report(results, args.out)


if __name__ == "__main__":
    main()
