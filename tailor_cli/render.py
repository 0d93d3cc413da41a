"""Rich tables for jobs, models and metrics; one console for output, one for errors."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from tailor_common.metrics import comparison, eval_report, fmt

# Piped output (logs, CI) gets room for job ids and metric names instead of Rich's 80 columns.
PIPE_WIDTH = 120
# Server and user text goes through esc(): "[red]" in a message or a prompt is text, not
# styling, and ":fire:" is not an emoji code.
out = Console(highlight=False, emoji=False,
              width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def esc(value: Any) -> str:
    """`value` as text that Rich prints verbatim (its square brackets are not markup)."""
    return escape(str(value))

STATE_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "queued": "dim"}


def state_text(state: str) -> str:
    style = STATE_STYLE.get(state, "cyan")
    return f"[{style}]{esc(state)}[/{style}]"


def short_time(iso: str) -> str:
    """`2026-11-28T03:59:31.95+00:00` -> `11-28 03:59` (UTC, as the API gives it)."""
    return str(iso)[5:16].replace("T", " ")


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("name", "state", "phase", "progress", "model", "created")
    table.add_column("id", no_wrap=True)
    for job in jobs:
        model = job.get("model")
        table.add_row(esc(job["name"]), state_text(job["state"]), esc(job.get("phase") or ""),
                      f"{100 * job['progress']:.0f}%",
                      esc(f"{model['name']}:{model['version']}") if model else "",
                      short_time(job["created_at"]), esc(job["id"]))
    return table


def models_table(models: list[dict[str, Any]]) -> Table:
    table = Table("name", "latest", "versions", "aliases", "labels")
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.get("aliases", {}).items()))
        table.add_row(esc(m["name"]), str(m.get("latest_version") or ""),
                      esc(m.get("versions", "")), esc(aliases), esc(", ".join(m.get("labels", []))))
    return table


def versions_table(model: dict[str, Any]) -> Table:
    by_version: dict[int, list[str]] = {}
    for alias, version in model.get("aliases", {}).items():
        by_version.setdefault(version, []).append(alias)
    table = Table("version", "aliases", "student macro-F1", "teacher macro-F1",
                  "agreement", "warnings", "created", title=esc(model["name"]))
    table.add_column("job", no_wrap=True)
    for v in model["versions"]:
        codes = ", ".join(str(w.get("code")) for w in v.get("warnings") or [])
        table.add_row(str(v["version"]), esc(", ".join(sorted(by_version.get(v["version"], [])))),
                      fmt(v.get("student_macro_f1")), fmt(v.get("teacher_macro_f1")),
                      fmt(v.get("holdout_agreement")),
                      f"[red]{esc(codes)}[/red]" if codes else "",
                      short_time(v["created_at"]), esc(v.get("job_id") or ""))
    return table


def warnings_panel(warnings: list[dict[str, Any]]) -> Panel | None:
    """The run's warnings, boxed in red so they come before any figure; None without."""
    if not warnings:
        return None
    lines = [f"[bold]{escape(str(w.get('code')))}[/bold]: {escape(str(w.get('message')))}"
             for w in warnings]
    return Panel("\n".join(lines), title=f"{len(warnings)} warning(s): do not trust these "
                 "figures as they stand", title_align="left", border_style="red")


def comparison_table(metrics: dict[str, Any], warned: bool = False) -> Table | None:
    """Teacher vs student, the better side of each figure in bold (green unless the run has
    warnings: a degenerate run's "better" figure is no good news); None without metrics."""
    rows = comparison(metrics)
    if not rows:
        return None
    table = Table("", "teacher", "student", title="teacher vs student")
    style = "bold" if warned else "bold green"
    for row in rows:
        cells = {side: esc(fmt(getattr(row, side))) for side in ("teacher", "student")}
        if row.winner:
            cells[row.winner] = f"[{style}]{cells[row.winner]}[/{style}]"
        table.add_row(esc(row.name), cells["teacher"], cells["student"])
    return table


def per_class_table(metrics: dict[str, Any]) -> Table | None:
    """Per-class F1 for both sides (labeled eval only)."""
    reports = {s: eval_report(metrics, s) or {} for s in ("teacher", "student")}
    labels = list(dict.fromkeys([*reports["teacher"].get("per_class", {}),
                                 *reports["student"].get("per_class", {})]))
    if not labels:
        return None
    table = Table("label", "support", "teacher F1", "student F1", title="per class")
    for label in labels:
        t = reports["teacher"].get("per_class", {}).get(label, {})
        s = reports["student"].get("per_class", {}).get(label, {})
        table.add_row(esc(label), fmt(s.get("support", t.get("support"))), fmt(t.get("f1")),
                      fmt(s.get("f1")))
    return table


def prompts_table(prompts: list[dict[str, Any]]) -> Table:
    table = Table("prompt", "weight", "template", title="prompts kept")
    for p in sorted(prompts, key=lambda p: -float(p.get("weight") or 0)):
        template = " ".join(str(p.get("template", "")).split())
        table.add_row(esc(p.get("name") or p.get("id")), fmt(p.get("weight")),
                      esc(template[:90] + ("…" if len(template) > 90 else "")))
    return table


def show_metrics(metrics: dict[str, Any], warnings: list[dict[str, Any]] | None = None
                 ) -> None:
    """Warnings first, then teacher vs student, per class and the prompts kept."""
    panel = warnings_panel(warnings or [])
    if panel is not None:
        out.print(panel)
    for table in (comparison_table(metrics, warned=bool(warnings)), per_class_table(metrics)):
        if table is not None:
            out.print(table)
    if metrics.get("prompts"):
        out.print(prompts_table(metrics["prompts"]))
