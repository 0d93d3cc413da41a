"""Moved to `tailor_common.metrics` (shared with the /ui dashboard); kept for old imports."""

from tailor_common.metrics import KNOWN, SIDES, Row, comparison, eval_report, fmt

__all__ = ["KNOWN", "SIDES", "Row", "comparison", "eval_report", "fmt"]
