"""The reliability matrix: fault tests record what they injected, what held and their figures.

Set TAILOR_RELIABILITY_REPORT to a markdown path (`make bench-reliability` does) and each
fault test merges its row into <path>.json and rewrites the table; unset, nothing is written,
so `make test` leaves the committed results alone.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_ENV = "TAILOR_RELIABILITY_REPORT"
# Read once, at import (collection): test fixtures clear every TAILOR_* variable before a test
# runs, and a report that silently stops recording would hide which scenarios were proved.
TARGET = os.environ.get(REPORT_ENV)


def record(number: int, scenario: str, injected: str, held: list[str],
           figures: dict[str, Any]) -> None:
    """Merge one scenario's row into the report (no-op unless TAILOR_RELIABILITY_REPORT)."""
    data = _load()
    if data is None:
        return
    data["rows"][str(number)] = {"scenario": scenario, "injected": injected, "held": held,
                                 "figures": figures,
                                 "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _save(data)


def record_input(kind: str, paths: list[str], inputs: list[str], held: list[str]) -> None:
    """Merge one input kind's row into the report's "Inputs" table (no-op unless enabled).

    Args:
        kind: the kind of input, e.g. "text that is not valid Unicode".
        paths: the entry points tried, e.g. ["POST /classify", "JSONL upload"].
        inputs: the concrete inputs tried, described briefly.
        held: what the test asserted and saw hold.
    """
    data = _load()
    if data is None:
        return
    inputs_table = data.setdefault("inputs", {})
    row = inputs_table.setdefault(kind, {"paths": [], "inputs": [], "held": []})
    for key, values in (("paths", paths), ("inputs", inputs), ("held", held)):
        row[key] = list(dict.fromkeys([*row[key], *values]))
    row["recorded_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _save(data)


def _load() -> dict[str, Any] | None:
    """The report recorded so far, or None when reporting is off."""
    target = TARGET
    if not target:
        return None
    json_path = Path(target).with_suffix(".json")
    return json.loads(json_path.read_text()) if json_path.exists() else {"rows": {}}


def _save(data: dict[str, Any]) -> None:
    assert TARGET is not None
    md_path = Path(TARGET)
    data["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "python": platform.python_version()}
    data["command"] = "make bench-reliability"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.with_suffix(".json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    md_path.write_text(render(data))


def _cell(text: Any) -> str:
    """A markdown table cell: pipes escaped, line breaks as <br>."""
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _figures(figures: dict[str, Any]) -> str:
    return "<br>".join(_cell(f"{k}: {v}") for k, v in figures.items())


def render(data: dict[str, Any]) -> str:
    """The markdown table of every recorded scenario, in scenario order."""
    machine = data.get("machine", {})
    lines = [
        "# Reliability matrix",
        "",
        "Fault-injection tests on real processes (API and Celery workers as subprocesses, "
        "PostgreSQL and Redis servers on loopback, SQLite + filesystem broker where noted). "
        "Each row is written by the test that proves it, when run with "
        f"`{data.get('command', 'make bench-reliability')}`; a failing assertion writes "
        "no row. Leases are shortened for the tests (TAILOR_JOB_LEASE_SECONDS=5, sweeps "
        "every second), so recovery times scale with those settings in production.",
        "",
        f"Machine: {machine.get('platform', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, no GPU.",
        "",
        "| # | scenario | how injected | what held | figures |",
        "|---|---|---|---|---|",
    ]
    for number in sorted(data["rows"], key=int):
        row = data["rows"][number]
        held = "<br>".join(_cell(f"✓ {h}") for h in row["held"])
        lines.append(f"| {number} | {_cell(row['scenario'])} | {_cell(row['injected'])} | {held} | "
                     f"{_figures(row['figures'])} |")
    if data.get("inputs"):
        lines += ["", "## Inputs", "",
                  "Hostile and malformed inputs (shared/INPUTS.md), each kind tried on every "
                  "path that takes it; a row is written only by tests that passed.", "",
                  "| kind | paths | inputs tried | what held |", "|---|---|---|---|"]
        for kind in sorted(data["inputs"]):
            row = data["inputs"][kind]
            lines.append(f"| {_cell(kind)} | {_cell(', '.join(row['paths']))} | "
                         f"{'<br>'.join(map(_cell, row['inputs']))} | "
                         f"{'<br>'.join(_cell('✓ ' + h) for h in row['held'])} |")
    return "\n".join(lines) + "\n"
