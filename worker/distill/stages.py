"""The stages the engine reports to its progress callback, in the order a run passes them.

The engine knows nothing of jobs: the service maps each stage onto a job state
(app.jobs.seam.STAGE_STATES). The values are the job states' names, so a callback that
records them as text (a log, the benchmark) reads the same words either way.
"""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    ANNOTATING = "annotating"  # fetch models, score the corpus with the teacher's prompts
    DISTILLING = "distilling"  # train the student's adapter and head, phase by phase
    EVALUATING = "evaluating"  # score student and teacher, compute warnings
