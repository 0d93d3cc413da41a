"""What each dashboard page shows, built from the same services the API routes call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy.orm import Session

from app.core.security import Principal
from app.datasets import service as datasets
from app.evaluations import service as evaluations
from app.jobs import service as jobs
from app.models import FINAL_STATES, JobEvent
from app.models.base import utcnow
from app.registry import service as registry
from app.ui import charts
from tailor_common.metrics import comparison, eval_report

SIDES = ("teacher", "student")
SHOWN_ELSEWHERE = {"teacher", "student", "prompts", "phases"}
MAX_EVALUATIONS = 200  # newest evaluations of a model shown on its page
MAX_EVENT_PAGES = 40  # events_after pages of 500: enough for hours of once-a-second progress
# Raw HTML in a card is shown as text: cards quote user-supplied label names and prompts.
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


@dataclass(frozen=True)
class PhaseView:
    name: str
    stats: dict[str, Any]
    chart: Markup | None


def job_events(db: Session, job_id: str) -> list[JobEvent]:
    """All of a job's events in order (state changes and progress steps)."""
    events: list[JobEvent] = []
    for _ in range(MAX_EVENT_PAGES):
        batch = jobs.events_after(db=db, job_id=job_id, after_id=events[-1].id if events else 0)
        if not batch:
            break
        events += batch
    return events


def timeline(events: list[JobEvent], now: datetime) -> list[charts.Segment]:
    """One segment per (state, phase) stretch; the last one runs until now if still going."""
    if not events:
        return []
    t0 = events[0].created_at
    segments: list[charts.Segment] = []
    for event in events:
        at = (event.created_at - t0).total_seconds()
        if segments:
            segments[-1] = charts.Segment(segments[-1].label, segments[-1].state,
                                          segments[-1].start, at)
        if event.state in FINAL_STATES:
            return segments
        label = event.phase or event.state
        if segments and (segments[-1].label, segments[-1].state) == (label, event.state):
            continue
        segments.append(charts.Segment(label, event.state, at, at))
    last = segments[-1]
    segments[-1] = charts.Segment(last.label, last.state, last.start,
                                  max(last.start, (now - t0).total_seconds()))
    return segments


def phase_views(metrics: dict[str, Any], events: list[JobEvent]) -> list[PhaseView]:
    """Per training phase: its figures and loss curve; live losses come from progress events
    until the engine writes the phase's summary into the metrics."""
    live: dict[str, list[float]] = {}
    for event in events:
        loss = (event.data or {}).get("loss")
        if isinstance(loss, int | float):
            live.setdefault(event.phase or event.state, []).append(float(loss))
    recorded = metrics.get("phases") or {}
    views = []
    for name in dict.fromkeys([*recorded, *live]):
        stats = dict(recorded.get(name) or {})
        losses = stats.pop("losses", None) or live.get(name) or []
        chart = charts.line_chart(losses, f"{name} loss per step") if len(losses) > 1 else None
        views.append(PhaseView(name, stats, chart))
    return views


def metric_sections(metrics: dict[str, Any]) -> dict[str, Any]:
    """Teacher vs student figures, per-class F1, confusion and reliability plots, prompts."""
    reports = {side: eval_report(metrics, side) for side in SIDES}
    confusions, reliabilities = {}, {}
    for side, report in reports.items():
        if not report:
            continue
        if report.get("confusion"):
            c = report["confusion"]
            confusions[side] = charts.confusion_matrix(c["labels"], c["matrix"],
                                                       f"{side} confusion matrix")
        bins = report.get("reliability")
        reliabilities[side] = (charts.reliability(
            _edges(bins), bins["confidence"], bins["accuracy"], bins["count"],
            f"{side} reliability diagram") if bins else None)
    labels = list(dict.fromkeys(label for r in reports.values() if r
                                for label in r.get("per_class", {})))
    per_class = [(label, *(((reports[s] or {}).get("per_class") or {}).get(label, {})
                           for s in SIDES)) for label in labels]
    prompts = sorted(metrics.get("prompts") or [], key=lambda p: -float(p.get("weight") or 0))
    extras = {k: v for k, v in metrics.items() if k not in SHOWN_ELSEWHERE and isinstance(v, dict)}
    return {"comparison": comparison(metrics), "per_class": per_class, "confusions": confusions,
            "reliabilities": reliabilities, "ece": {s: (r or {}).get("ece")
                                                    for s, r in reports.items()},
            "prompts": prompts, "max_weight": max((float(p.get("weight") or 0) for p in prompts),
                                                  default=1.0) or 1.0,
            "extras": extras}


def _edges(bins: dict[str, Any]) -> list[float]:
    edges = list(bins.get("edges") or bins.get("bins") or [])
    return edges if len(edges) == len(bins["count"]) + 1 else [*edges, 1.0]


def job_page(db: Session, viewer: Principal, job_id: str) -> dict[str, Any]:
    job = jobs.job_to_dict(jobs.get_job(db=db, job_id=job_id, viewer=viewer))
    events = job_events(db, job_id)
    segments = timeline(events, now=utcnow())
    return {"job": job, "final": job["state"] in FINAL_STATES, "segments": segments,
            "timeline": charts.timeline(segments, "phase timeline") if segments else None,
            "phases": phase_views(job["metrics"], events), **metric_sections(job["metrics"])}


def jobs_page(db: Session, viewer: Principal, limit: int, offset: int) -> dict[str, Any]:
    rows = [jobs.job_to_dict(j) for j in jobs.list_jobs(db=db, viewer=viewer, state=None,
                                                         name=None, limit=limit, offset=offset)]
    return {"jobs": rows, "final_states": [s.value for s in FINAL_STATES],
            "next_offset": offset + limit if len(rows) == limit else None,
            "prev_offset": max(0, offset - limit) if offset else None}


def submit_page(db: Session, viewer: Principal, from_job: str | None) -> dict[str, Any]:
    """The submit form, prefilled with the spec of `from_job` (a clone) or a skeleton.

    Raises:
        NotFound: `from_job` absent or another key's (404, as GET /jobs/{id}).
    """
    if from_job is None:
        return {"source": None, "spec": SPEC_SKELETON}
    job = jobs.get_job(db=db, job_id=from_job, viewer=viewer)
    return {"source": job.id, "spec": job.spec}


# What a new (not cloned) job starts from: the three required fields (DESIGN.md section 3).
SPEC_SKELETON: dict[str, Any] = {
    "name": "crisis",
    "task": {"labels": [{"name": "crisis", "description": "a disaster or emergency"},
                        {"name": "not_crisis", "description": "anything else"}]},
    "data": {"dataset_id": "ds_..."}}


def datasets_page(db: Session, viewer: Principal, limit: int, offset: int) -> dict[str, Any]:
    """The datasets `viewer` may see, newest first, each with the ids of the jobs that are
    not final and use it (those the viewer may see): such a dataset cannot be deleted yet."""
    rows = datasets.list_datasets(db=db, viewer=viewer, limit=limit, offset=offset)
    return {"datasets": [{**d.summary(), "in_use": [j.id for j in datasets.jobs_using(db, d.id)
                                                     if viewer.may_see(j.owner)]}
                         for d in rows],
            "next_offset": offset + limit if len(rows) == limit else None,
            "prev_offset": max(0, offset - limit) if offset else None}


def export_links(detail: dict[str, Any]) -> list[dict[str, str]]:
    """Download links for a version's exports: `[{"format", "href"}]`.

    Hook for exports (DESIGN.md section 8, GET .../versions/{v}/export?format=onnx|hf), not
    built yet: once the version detail lists its exports, return one link per format here
    and the model page shows them; until then there is nothing to download and no link.
    """
    return [{"format": f, "href": f"/models/{detail['name']}/versions/{detail['version']}"
                                  f"/export?format={f}"}
            for f in detail.get("exports") or []]


def model_page(db: Session, name: str, version: int | None) -> dict[str, Any]:
    """A model's versions (archived ones too: they can be unarchived or deleted here), its
    aliases, and the chosen version (default: the latest live one) in full."""
    model = registry.get_model(db=db, name=name, include_archived=True)
    chosen = version or model["latest_version"]
    if chosen is None:
        return {"model": model, "version": None}
    detail = registry.version_detail(registry.get_version(db=db, name=name, version=chosen))
    by_version: dict[int, list[str]] = {}
    for alias, v in model["aliases"].items():
        by_version.setdefault(v, []).append(alias)
    return {"model": model, "version": detail, "aliases_of": by_version,
            "exports": export_links(detail),
            "card_html": Markup(_markdown.render(detail["card"] or "")),
            **metric_sections(detail["metrics"])}


def evaluation_groups(db: Session, viewer: Principal, name: str) -> list[dict[str, Any]]:
    """The model's evaluations `viewer` may see, grouped by dataset (the most recently
    scored dataset first; in a group, newest version first): `[{"dataset_id",
    "dataset_name", "best": id of the highest macro-F1, "evaluations": [EvaluationOut]}]`."""
    rows = evaluations.list_evaluations(db=db, viewer=viewer, model=name,
                                        limit=MAX_EVALUATIONS, offset=0)
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first, so groups come in order of their latest evaluation
        group = groups.setdefault(row.dataset_id, {"dataset_id": row.dataset_id,
                                                   "dataset_name": row.dataset_name,
                                                   "evaluations": []})
        group["evaluations"].append(evaluations.evaluation_to_dict(row))
    for group in groups.values():
        group["evaluations"].sort(key=lambda e: -e["version"])  # stable: newest first within
        group["best"] = max(group["evaluations"], key=lambda e: e["macro_f1"])["id"]
    return list(groups.values())
