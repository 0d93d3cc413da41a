"""The dashboard's SVG charts and the phase timeline, on hand-made inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from app.ui import charts
from app.ui.views import timeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(state: str, phase: str | None, second: float) -> SimpleNamespace:
    return SimpleNamespace(state=state, phase=phase, created_at=T0 + timedelta(seconds=second))


def test_timeline_has_one_segment_per_stretch_and_stops_at_the_final_state():
    events = [event("queued", None, 0), event("annotating", "annotate", 2),
              event("annotating", "annotate", 5), event("distilling", "train", 9),
              event("succeeded", "register", 10)]
    segments = timeline(events, now=T0 + timedelta(hours=1))
    assert [(s.label, s.start, s.end) for s in segments] == [
        ("queued", 0, 2), ("annotate", 2, 9), ("train", 9, 10)]


def test_a_running_job_s_last_phase_runs_until_now():
    segments = timeline([event("queued", None, 0), event("distilling", "train", 3)],
                        now=T0 + timedelta(seconds=8))
    assert segments[-1] == charts.Segment("train", "distilling", 3, 8)


def test_confusion_matrix_shows_counts_and_escapes_labels():
    svg = charts.confusion_matrix(["a<b>", "c"], [[5, 1], [0, 3]], "m")
    assert "a&lt;b&gt;" in svg and "<b>" not in svg
    assert svg.count('class="cell"') == 4
    assert "true a&lt;b&gt;, predicted c: 1" in svg
    many = [f"label{i}" for i in range(36)]
    big = charts.confusion_matrix(many, [[1] * 36] * 36, "big")
    assert big.count('class="cell"') == 36 * 36 and ">1</text>" not in big, "no room for counts"


def test_reliability_draws_non_empty_bins_with_their_gap():
    svg = charts.reliability([0, 0.25, 0.5, 0.75, 1.0], [None, 0.4, 0.6, 0.9],
                             [None, 0.5, 0.6, 0.7], [0, 10, 5, 20], "r")
    assert svg.count('class="bin"') == 3
    assert svg.count('fill="#D55E00"') == 2, "bins whose accuracy differs from confidence"
    assert "confidence 0.75–1.00: 20 texts, accuracy 0.70" in svg


def test_line_chart_labels_its_range():
    svg = charts.line_chart([3.0, 2.0, 1.5], "loss")
    assert ">3</text>" in svg and ">1.5</text>" in svg and "step 3" in svg
    assert svg.count("<circle") == 3
