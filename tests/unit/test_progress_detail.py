"""progress_detail: the rate and ETA rules, and the counts the engine reports while it runs."""

from datetime import datetime

import pytest

from tests.fixtures.tiny import corpus
from worker.distill.config import EngineConfig
from worker.distill.engine import DistillData, run
from worker.distill.progress import MIN_RATE_SPAN_S, RateMeter, rate_and_eta
from worker.distill.strategies import get_strategy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_the_slope_and_eta_the_rest_at_that_rate():
    rate, eta = rate_and_eta([(0.0, 0), (10.0, 25)], total=100)
    assert rate == pytest.approx(2.5)
    assert eta == pytest.approx(30.0)


def test_no_rate_before_enough_time_has_passed():
    assert rate_and_eta([(0.0, 0)], total=10) == (None, None)
    assert rate_and_eta([(0.0, 0), (MIN_RATE_SPAN_S / 2, 5)], total=10) == (None, None)


def test_a_stalled_stage_has_a_zero_rate_and_no_eta():
    assert rate_and_eta([(0.0, 4), (20.0, 4)], total=10) == (0.0, None)


def test_past_an_underestimated_total_the_eta_is_unknown_not_negative():
    rate, eta = rate_and_eta([(0.0, 0), (10.0, 120)], total=100)
    assert rate == pytest.approx(12.0) and eta is None


def test_meter_follows_a_change_of_speed_within_its_window():
    clock = Clock()
    meter = RateMeter("annotate", "texts", clock=clock, window_s=30.0)
    done = 0
    for _ in range(60):  # a minute at 10 texts/s (cache hits)...
        clock.now += 1
        done += 10
        meter.update(done, 2000)
    for _ in range(60):  # ...then a minute at 1 text/s (fresh teacher calls)
        clock.now += 1
        done += 1
        reading = meter.update(done, 2000)
    assert reading.rate_per_s == pytest.approx(1.0, rel=0.05)
    assert reading.eta_s == pytest.approx((2000 - done) / 1.0, rel=0.05)
    assert (reading.stage, reading.unit, reading.done, reading.total) == (
        "annotate", "texts", done, 2000)
    datetime.fromisoformat(reading.updated_at)


def test_meter_total_never_falls_below_done():
    clock = Clock()
    meter = RateMeter("annotate", "texts", clock=clock)
    meter.update(0, 5)
    clock.now += 5
    reading = meter.update(8, 5)
    assert reading.total == 8 and reading.eta_s is None


def _cfg(tiny_models):
    return EngineConfig.from_dict({
        "task": {"labels": [{"name": "crisis"}, {"name": "calm", "verbalizer": "none"}]},
        "teacher": {"model": tiny_models[0], "batch_size": 4},
        "student": {"model": tiny_models[1], "max_length": 32},
        "distillation": {"epochs": 2, "batch_size": 4}})


def test_engine_reports_counted_stages_while_it_runs(tmp_path, tiny_models):
    events = []
    cfg = _cfg(tiny_models)
    texts = corpus(24)
    run(cfg, DistillData(texts), workdir=tmp_path / "w", cache_dir=tmp_path / "c",
        progress=lambda *a: events.append(a))
    details = [(state, detail) for state, _phase, _overall, _metrics, detail in events]
    annotate = [d for s, d in details if d and d["stage"] == "annotate"]
    distill = [d for s, d in details if d and d["stage"] == "distill"]
    expected = get_strategy("adaptive").expected_teacher_calls(cfg, len(texts))
    assert len(annotate) > 3 and len(distill) > 3
    for stage, unit in ((annotate, "texts"), (distill, "steps")):
        dones = [d["done"] for d in stage]
        assert dones == sorted(dones) and dones[-1] > dones[0], "done only grows"
        assert all(d["unit"] == unit and d["done"] <= d["total"] for d in stage)
    assert annotate[0]["total"] == expected
    assert distill[-1]["done"] <= distill[-1]["total"] == distill[0]["total"]
    # Counts belong to their state: none while evaluating, and distill counts never
    # appear during annotation.
    assert all(d is None for s, d in details if s == "evaluating")
    assert all(d is None or d["stage"] == "annotate" for s, d in details if s == "annotating")
