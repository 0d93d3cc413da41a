"""`tailor jobs submit --dry-run`: the server's estimate as a table; durations people read."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from tailor_cli.render import esc


def duration(seconds: float | None) -> str:
    """Seconds as `45s`, `3m 05s` or `2h 07m`; `—` when unknown."""
    if seconds is None:
        return "—"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def estimate_table(body: dict[str, Any]) -> Table:
    """The answer of POST /jobs?dry_run=true: counts, seconds per phase and their basis."""
    est = body["estimate"]
    table = Table("phase", "estimate", title=f"dry run: valid, nothing created "
                  f"({esc(est.get('basis', ''))})", title_justify="left")
    work = {"annotate": f"{est['teacher_calls']:,} teacher calls over {est['texts']:,} texts",
            "distill": f"{est.get('training_steps', 0):,} training steps"}
    table.add_column("work")
    for phase, part in est["phases"].items():
        table.add_row(esc(phase), duration(part["seconds"]), esc(work.get(phase, "")))
    table.add_row("[bold]total[/bold]", f"[bold]{duration(est['seconds'])}[/bold]", "")
    return table
