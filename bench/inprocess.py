"""The hardware's limit for one student: its forward passes at batch 32 in this process, with
no HTTP, no queue and no JSON, per backend and precision — torch eager with the adapter
attached as Tailor serves it (peft on the shared base), and the ONNX Runtime graphs Tailor
compiles (fp32, and the per-channel dynamic int8 copy).

Each row runs batches of 32 bench texts (tokenized, sorted by length, each batch padded to
its longest text) for a fixed time and reports texts per second and the time of one batch;
`request32_p50_ms` is the time of one of the bench's 32-text requests (its texts as sent,
unsorted) as one batch.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 32


def _rate(step: Any, batches: list[list[list[int]]], seconds: float) -> dict[str, Any]:
    """Run `step(batch)` over `batches` (cycling) for `seconds`, after one warm-up pass."""
    for batch in batches[:2]:
        step(batch)
    times: list[float] = []
    texts = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < 3:
        batch = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t0)
        texts += len(batch)
    return {"texts_per_s": round(texts / sum(times), 1), "batches": len(times),
            "batch32_p50_ms": round(float(np.median(times)) * 1000, 2),
            "batch32_p99_ms": round(float(np.percentile(times, 99)) * 1000, 2)}


def limits(home: Path, cache: Path, key: str, artifact_path: str, files: dict[str, str],
           texts: list[str], *, thread_counts: list[int], seconds: float) -> dict[str, Any]:
    """Texts/s at batch 32 for torch, onnx-fp32 and onnx-int8 at each thread count.

    The ONNX graphs are compiled (or found) exactly as Tailor's onnx backend compiles them,
    so this also leaves them cached for the server. Returns {"torch": {threads: row}, ...}
    plus "compiled": the int8 agreement record.
    """
    import torch

    from app.core.config import get_settings
    from app.serving.backend import make_compiler
    from app.serving.compiled import (
        FP32_FILE,
        INT8_FILE,
        compiled_dir,
        decisions,
        pad,
        run,
        session,
    )
    from app.serving.pool import ModelPool

    settings = get_settings()
    out: dict[str, Any] = {"torch": {}, "onnx-fp32": {}, "onnx-int8": {}}
    pool = ModelPool(settings.artifacts, cache, 4, 1 << 40)
    served = pool.acquire(key, artifact_path, files)
    # Sorted by length before batching: each batch pads least, so this is the best the
    # model does at batch 32 (Tailor's batcher sorts and splits its batches the same way).
    encoded = pool.encode(served, texts).ids
    ids = sorted(encoded, key=len)
    batches = [ids[i:i + BATCH] for i in range(0, len(ids) - BATCH + 1, BATCH)]
    random.Random(0).shuffle(batches)  # a short run must not see only the shortest texts
    # The bench's 32-text requests as they are sent (unsorted): the in-process time of the
    # same 32 texts is what a 32-text request is compared with.
    requests = [encoded[i:i + BATCH] for i in range(0, len(encoded) - BATCH + 1, BATCH)]
    for threads in thread_counts:
        torch.set_num_threads(threads)
        out["torch"][str(threads)] = _rate(
            lambda b: pool.forward([(served, x) for x in b]), batches, seconds)
        out["torch"][str(threads)]["request32_p50_ms"] = _rate(
            lambda b: pool.forward([(served, x) for x in b]), requests,
            seconds)["batch32_p50_ms"]
        print(f"  in-process torch, {threads} threads: {out['torch'][str(threads)]}",
              flush=True)
    reference = np.concatenate([np.stack(pool.forward([(served, x) for x in b]))
                                for b in batches])
    pool.release(served)

    settings = settings.model_copy(update={"serving_backend": "onnx"})
    compiled_pool = ModelPool(settings.artifacts, cache, 4, 1 << 40, make_compiler(settings))
    served = compiled_pool.acquire(key, artifact_path, files)
    base = compiled_pool.bases[served.base_key]
    assert base.compiled is not None
    out["compiled"] = {"served_precision": served.precision,
                       "decision": base.compiled.decision.reason,
                       "int8_agreement": base.compiled.record.agreement,
                       "agreement_texts": base.compiled.record.texts,
                       "max_abs_diff": base.compiled.record.max_abs_diff}
    folder = compiled_dir(settings.artifacts / artifact_path)
    for name, graph in (("onnx-fp32", FP32_FILE), ("onnx-int8", INT8_FILE)):
        for threads in thread_counts:
            sess = session(folder / graph, threads)
            out[name][str(threads)] = _rate(lambda b, s=sess: run(s, *pad(b, base.pad_id)),
                                            batches, seconds)
            out[name][str(threads)]["request32_p50_ms"] = _rate(
                lambda b, s=sess: run(s, *pad(b, base.pad_id)), requests,
                seconds)["batch32_p50_ms"]
            print(f"  in-process {name}, {threads} threads: {out[name][str(threads)]}",
                  flush=True)
        probs = np.concatenate([run(sess, *pad(b, base.pad_id)) for b in batches])
        out["compiled"][f"{name}_vs_torch"] = {
            "texts": len(probs), "max_abs_diff": round(float(np.abs(probs - reference).max()), 6),
            "label_agreement": round(float(np.mean(
                decisions(probs, served.multi_label) == decisions(reference, served.multi_label)
            ) if not served.multi_label else np.mean(
                (decisions(probs, True) == decisions(reference, True)).all(axis=1))), 4)}
    compiled_pool.release(served)
    return out
