"""Counts a person can read while a long stage runs: done of total, rate and time left.

The engine reports two long stages: `annotate` (teacher texts scored or read from the cache,
of the strategy's expected teacher calls) and `distill` (student training steps, of the
schedule's total). A `RateMeter` per stage turns the running count into a `ProgressDetail`;
it is pure (the clock is injected), so the rate and ETA rules are tested without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

# The rate is measured over the last half minute: long enough to smooth batch-sized jumps
# (a teacher batch of 16 texts lands at once), short enough to follow a change of speed
# (cache hits give way to fresh scoring; the easy phase gives way to the full one).
RATE_WINDOW_S = 30.0
# Below this span between the oldest and newest sample a rate is noise: report none yet.
MIN_RATE_SPAN_S = 1.0


@dataclass(frozen=True)
class ProgressDetail:
    """One reading of a running stage.

    Args:
        stage: "annotate" or "distill".
        done: units finished so far (>= 0).
        total: units expected in the stage (>= done: an estimate that ran short grows).
        unit: "texts" (teacher calls) or "steps" (training steps).
        rate_per_s: units per second over the last RATE_WINDOW_S, or None while unknown.
        eta_s: seconds left at that rate, or None while the rate is unknown or zero, or the
            estimate of the total has run out.
        updated_at: ISO 8601 UTC time of this reading.
    """

    stage: str
    done: int
    total: int
    unit: str
    rate_per_s: float | None
    eta_s: float | None
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate_and_eta(samples: list[tuple[float, int]], total: int
                 ) -> tuple[float | None, float | None]:
    """(units per second, seconds left) from (time s, done) samples, oldest first.

    The rate is the slope between the oldest and newest sample; None when they span less
    than MIN_RATE_SPAN_S. The ETA is None when the rate is unknown or zero, or when `done`
    has passed `total` (the expected count was an underestimate: nobody knows what is left).
    """
    if len(samples) < 2:
        return None, None
    (t0, d0), (t1, d1) = samples[0], samples[-1]
    if t1 - t0 < MIN_RATE_SPAN_S:
        return None, None
    rate = max(0.0, (d1 - d0) / (t1 - t0))
    if rate == 0.0 or d1 > total:
        return rate, None
    return rate, (total - d1) / rate


class RateMeter:
    """Follows one stage's running count; `update` returns the reading to publish.

    Args:
        stage: "annotate" or "distill".
        unit: "texts" or "steps".
        clock: monotonic seconds (injected by tests).
        window_s: how far back the rate looks.
    """

    def __init__(self, stage: str, unit: str, clock: Callable[[], float] = time.monotonic,
                 window_s: float = RATE_WINDOW_S) -> None:
        self.stage, self.unit, self.clock, self.window_s = stage, unit, clock, window_s
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, done: int, total: int) -> ProgressDetail:
        """Record `done` of `total` now and return the stage's reading."""
        now = self.clock()
        self._samples.append((now, done))
        # Keep one sample at or before the window's start so the slope spans the window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        rate, eta = rate_and_eta(list(self._samples), total)
        return ProgressDetail(
            stage=self.stage, done=done, total=max(total, done), unit=self.unit,
            rate_per_s=None if rate is None else round(rate, 3),
            eta_s=None if eta is None else round(eta, 1),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"))
