"""`tailor jobs watch`: follow a job's Server-Sent Events with a live bar per phase."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from tailor import Client, JobFailed
from tailor.jobs import FINAL
from tailor_cli.estimate import duration
from tailor_cli.render import esc, out, state_text
from tailor_common.metrics import fmt


class PhaseBars:
    """One bar for the whole job and one per phase as phases appear; lines for changes."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.overall = progress.add_task("overall", total=1.0, info="")
        self.phases: dict[str, TaskID] = {}
        self.current: str | None = None
        self.state: str | None = None

    def update(self, event: dict[str, Any]) -> None:
        state = event.get("state") or ""
        phase = event.get("phase") or state
        data = event.get("data") or {}
        detail = data.get("progress_detail")
        detail = detail if isinstance(detail, dict) else None
        info = "  ".join([f"{k} {fmt(v)}" for k, v in data.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)]
                         + ([detail_text(detail)] if detail else []))
        self.progress.update(self.overall, completed=event.get("progress") or 0.0,
                             description=f"overall · {esc(state)}")
        if state != self.state or phase != self.current:
            step = state_text(state) + (f" {esc(phase)}" if phase != state else "")
            self.progress.console.print(
                f"{time.strftime('%H:%M:%S')} {step} "
                f"{100 * (event.get('progress') or 0):.0f}%" + (f"  {esc(info)}" if info else ""))
        self.state = state
        if state in FINAL:
            if state == "succeeded":  # a failed or cancelled phase keeps its bar unfinished
                self._close_current()
            return
        if phase != self.current:
            self._close_current()
            self.phases[phase] = self.progress.add_task(f"  {esc(phase)}", total=None, info="")
            self.current = phase
        task = self.phases[phase]
        if isinstance(data.get("phase_progress"), int | float):
            self.progress.update(task, total=1.0, completed=float(data["phase_progress"]))
        elif detail and detail.get("stage") == "annotate":  # training bars go per phase
            self.progress.update(task, total=detail["total"], completed=detail["done"])
        if info:
            self.progress.update(task, info=esc(info))

    def _close_current(self) -> None:
        if self.current is not None:
            task = self.phases[self.current]
            self.progress.update(task, total=1.0, completed=1.0)
            self.current = None


def detail_text(detail: dict[str, Any]) -> str:
    """A job's progress_detail as `120/900 texts · 2.40/s · ETA 5m 25s`."""
    rate = detail.get("rate_per_s")
    return (f"{detail.get('done', 0):,}/{detail.get('total', 0):,} {detail.get('unit', '')}"
            f" · {'—' if rate is None else f'{rate:.2f}'}/s · ETA {duration(detail.get('eta_s'))}")


def follow(client: Client, job_id: str) -> dict[str, Any]:
    """Show the job's progress until it reaches a final state; return the final job.

    Raises:
        TailorError: 404 for an unknown job (before any display); `stream_lost`.
    """
    client.jobs.get(job_id)  # a clean 404 before any display
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                        console=out, disable=not out.is_terminal)
    with progress:
        bars = PhaseBars(progress)
        try:
            return client.jobs.wait(job_id, on_progress=bars.update)
        except JobFailed as failed:
            return failed.job
