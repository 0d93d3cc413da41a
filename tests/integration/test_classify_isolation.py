"""One bad text fails only its own request, on a real API process (embedded mode: SQLite).

Issue 11, kind 1: a lone surrogate in a /classify text returned 500 and failed about two
thirds of the valid requests sharing its micro-batch. Here poison requests are fired in the
middle of 60 concurrent valid ones against `python -m app.serve`; every valid one must get
200 with the same results as alone, every poison one a 422 naming its item.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.versions import register_tiny
from tests.integration.report import record, record_input
from tests.support import Stack, make_env

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

VALID = ["flood water rose in the city", "the team won the football match",
         "Flood 🌊 hits town", "فيضانات في المدينة"]
POISON = [  # (text, what it is); the first is issue 11's example
    ("Flood \ud83d hits town", "lone high surrogate (emoji cut in half)"),
    ("\udc8e water rising", "lone low surrogate"),
    ("flood\x00water", "NUL inside a text"),
    ("\u200b\u200b\u200b", "zero-width spaces only"),
    ("\ufeff", "byte-order mark only"),
    ("x" * 20_001, "text over the 20,000-character limit"),
]


@pytest.fixture
def served_api(embedded: Path, tiny_models: tuple[str, str],
               monkeypatch: pytest.MonkeyPatch) -> Any:
    """An API process (no worker) on an embedded home holding one registered tiny student."""
    register_tiny(tiny_models[1], seed=1)
    stack = Stack(embedded, make_env(embedded, TAILOR_CACHE_DIR=str(embedded / "cache"),
                                     # a wider window so the burst shares forward passes
                                     TAILOR_SERVING_MAX_WAIT_MS="20",
                                     # no 429s on a busy 2-core machine: not the subject here
                                     TAILOR_SERVING_MAX_QUEUE_DELAY_MS="60000"))
    stack.start_api()
    yield stack
    stack.discard()


def _body(texts: list[str]) -> bytes:
    # json.dumps escapes lone surrogates as \udXXX, as a client's JSON encoder would
    return json.dumps({"model": "crisis", "texts": texts}).encode()


def _batches(client: httpx.Client) -> tuple[float, float, float]:
    """(forward passes, texts in them, passes with at most 4 texts) from /metrics."""
    count = total = small = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name != "tailor_serving_batch_texts":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "4.0":
                small = sample.value
    return count, total, small


async def _burst(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post(
            "/classify", content=b, headers={"content-type": "application/json"})
            for b in bodies))


def test_poison_requests_among_60_concurrent_valid_ones_fail_alone(served_api: Stack):
    s = served_api
    with s.client() as client:
        alone = client.post("/classify", content=_body(VALID),
                            headers={"content-type": "application/json"})
        assert alone.status_code == 200, alone.text
        expected = alone.json()["results"]
        before = _batches(client)
        bodies = [_body(VALID) for _ in range(60)]
        poison_at = {}
        for k, (text, _) in enumerate(POISON):  # spread through the burst, at varied items
            at = 10 * k + 5
            bodies.insert(at, _body(VALID[: k % 4] + [text] + VALID[k % 4:]))
            poison_at[at] = k % 4
        started = time.perf_counter()
        answers = asyncio.run(_burst(s.url, bodies))
        elapsed = time.perf_counter() - started
        after = _batches(client)
    try:
        valid = [r for i, r in enumerate(answers) if i not in poison_at]
        assert [r.status_code for r in valid] == [200] * 60, next(
            r.text for r in valid if r.status_code != 200)
        for r in valid:
            for got, want in zip(r.json()["results"], expected, strict=True):
                assert got["label"] == want["label"]
                assert all(abs(got["scores"][k] - v) < 1e-5 for k, v in want["scores"].items())
        for at, item in poison_at.items():
            assert answers[at].status_code == 422, answers[at].text
            error = answers[at].json()["error"]
            assert error["details"]["field"] == f"texts[{item}]", error
            assert error["message"].startswith(f"texts[{item}]: ")
        assert "Traceback" not in s.logs() and "unhandled error" not in s.logs()
    except BaseException:
        print(s.logs())
        raise
    passes, texts, small = (a - b for a, b in zip(after, before, strict=True))
    assert texts == 60 * len(VALID)  # no poison text ever reached a forward pass
    shared = passes - small  # passes of more than one request's 4 texts
    assert shared >= 1
    record(19, "one poison request among 60 concurrent valid /classify requests",
           "6 requests each with one unreadable text (lone surrogates, NUL, zero-width only, "
           "BOM only, over-length) fired amid 60 valid ones at a real API process",
           ["all 60 valid requests answered 200 with the same scores as alone",
            "each poison request answered 422 naming its item (texts[i])",
            "no poison text reached the model; no 500, no traceback in the log"],
           {"requests": f"{len(answers)} at once", "valid 200": f"{len(valid)} of 60",
            "poison 422": f"{len(poison_at)} of {len(poison_at)}",
            "forward passes": int(passes), "passes shared by several requests": int(shared),
            "mean texts per pass": f"{texts / passes:.1f}", "burst time": f"{elapsed:.2f} s"})
    held = ["422 naming texts[i] before the request joins a batch; never 500",
            "60 concurrent valid requests sharing its micro-batch window: all 200"]
    record_input("text that is not valid Unicode", ["POST /classify (real API process)"],
                 [what for _, what in POISON[:2]], held)
    record_input("text with no visible content, control characters or over the limit",
                 ["POST /classify (real API process)"], [what for _, what in POISON[2:]], held)
