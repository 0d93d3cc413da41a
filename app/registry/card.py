"""The model card: a short markdown page a reviewer can read before promoting a version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def _warnings_section(warnings: Sequence[dict[str, str]]) -> list[str]:
    if not warnings:
        return []
    lines = ["## Warnings", "",
             f"This version has {len(warnings)} warning(s); an alias moves onto it only with "
             "`force`. Do not rely on its figures until they are understood.", ""]
    lines += [f"- **{w.get('code')}**: {w.get('message')}" for w in warnings]
    return [*lines, ""]


def render_card(name: str, version: int, metrics: dict[str, Any], lineage: dict[str, Any],
                warnings: Sequence[dict[str, str]] = ()) -> str:
    """Render the markdown card for `name:version` from its metrics, lineage and warnings
    (`[{"code", "message"}]`, listed first: a reviewer must see them before any figure)."""
    teacher, student = metrics.get("teacher", {}), metrics.get("student", {})
    t_eval, s_eval = teacher.get("eval", {}), student.get("eval", {})
    config = lineage.get("config", {})
    labels = [lab["name"] for lab in config.get("task", {}).get("labels", [])]
    lines = [
        f"# {name} v{version}",
        "",
        f"Tailored classifier for: {', '.join(labels)}"
        + (" (multi-label)" if config.get("task", {}).get("multi_label") else ""),
        "",
        *_warnings_section(warnings),
        "## Quality (teacher vs student)",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| macro-F1 (labeled eval) | {_fmt(t_eval.get('macro_f1'))} | "
        f"{_fmt(s_eval.get('macro_f1'))} |",
        f"| accuracy (labeled eval) | {_fmt(t_eval.get('accuracy'))} | "
        f"{_fmt(s_eval.get('accuracy'))} |",
        f"| ECE | {_fmt(t_eval.get('ece'))} | {_fmt(s_eval.get('ece'))} |",
        f"| ms per text (batch {student.get('latency_batch', 32)}) | "
        f"{_fmt(teacher.get('ms_per_text'))} | {_fmt(student.get('ms_per_text'))} |",
        f"| parameters | {_fmt(teacher.get('total_params'))} | "
        f"{_fmt(student.get('trainable_params'))} trainable / "
        f"{_fmt(student.get('total_params'))} total |",
        "",
        f"Agreement with the teacher on held-out corpus texts: "
        f"{_fmt(student.get('holdout_agreement'))}.",
        "",
        "## Lineage",
        "",
        f"- job: `{lineage.get('job_id')}`",
        f"- teacher: `{lineage.get('teacher', {}).get('uri')}` "
        f"(sha256 `{str(lineage.get('teacher', {}).get('sha256'))[:16]}`)",
        f"- student base: `{lineage.get('student_base', {}).get('uri')}` "
        f"(sha256 `{str(lineage.get('student_base', {}).get('sha256'))[:16]}`)",
        f"- strategy: `{config.get('distillation', {}).get('strategy')}`",
        f"- corpus: {lineage.get('data', {}).get('corpus_texts')} texts "
        f"(sha256 `{str(lineage.get('data', {}).get('corpus_sha256'))[:16]}`)",
        f"- code version: {lineage.get('code_version')}",
        "",
        "## Prompts kept",
        "",
    ]
    for p in lineage.get("prompts", []):
        lines.append(f"- `{p.get('name')}` weight {_fmt(p.get('weight'))}")
    lines += ["", "## Limits", "",
              "Trained on teacher labels, not human labels: it inherits the teacher's blind "
              "spots. Check the labeled-eval numbers above before relying on it."]
    return "\n".join(lines) + "\n"
