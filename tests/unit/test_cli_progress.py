"""The CLI's estimate table and its progress counts (rendering only; the integration test
runs them against a real server)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from tailor_cli.estimate import duration, estimate_table
from tailor_cli.watch import PhaseBars, detail_text


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (None, 0, 44.6, 60, 185, 3600 * 2 + 7 * 60)] == [
        "—", "0s", "45s", "1m 00s", "3m 05s", "2h 07m"]


def test_detail_text_gives_counts_rate_and_eta():
    detail = {"stage": "annotate", "done": 1200, "total": 9000, "unit": "texts",
              "rate_per_s": 2.4, "eta_s": 3250.0}
    assert detail_text(detail) == "1,200/9,000 texts · 2.40/s · ETA 54m 10s"
    assert detail_text({**detail, "rate_per_s": None, "eta_s": None}) == \
        "1,200/9,000 texts · —/s · ETA —"


def _text(renderable) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_estimate_table_shows_each_phase_the_work_and_the_basis():
    text = _text(estimate_table({"dry_run": True, "estimate": {
        "texts": 900, "teacher_calls": 2100, "training_steps": 300, "seconds": 1110.0,
        "phases": {"annotate": {"seconds": 900.0}, "distill": {"seconds": 200.0},
                   "evaluate": {"seconds": 10.0}}, "basis": "documented default"}}))
    assert "nothing created (documented default)" in text
    assert "2,100 teacher calls over 900 texts" in text and "300 training steps" in text
    assert "15m 00s" in text and "18m 30s" in text


def test_watch_fills_the_annotation_bar_from_the_counts():
    progress = Progress(console=Console(file=io.StringIO()))
    bars = PhaseBars(progress)
    detail = {"stage": "annotate", "done": 30, "total": 120, "unit": "texts",
              "rate_per_s": 3.0, "eta_s": 30.0}
    bars.update({"state": "annotating", "phase": "annotate", "progress": 0.2,
                 "data": {"progress_detail": detail}})
    task = progress.tasks[bars.phases["annotate"]]
    assert (task.completed, task.total) == (30, 120)
    assert "30/120 texts · 3.00/s · ETA 30s" in task.fields["info"]
