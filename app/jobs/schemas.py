"""Request and response shapes for /jobs (DESIGN.md section 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"


class Strict(BaseModel):
    # strict: a boolean is not an integer, a number is not a string (issue 11.7)
    model_config = ConfigDict(extra="forbid", strict=True)


class LabelIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    verbalizer: str | None = Field(None, min_length=1, max_length=64,
                                   description="The word the teacher answers with (default: "
                                               "the name, `_` read as a space).")


class TaskIn(Strict):
    labels: list[LabelIn] = Field(min_length=2, max_length=64)
    multi_label: bool = False
    instruction: str = Field("", max_length=4000)


class TeacherIn(Strict):
    model: str | None = Field(None, max_length=500,
                              description="Path, pypi://pkg[==v]/path or hf://org/name.")
    prompts: list[str] = Field(default_factory=list, max_length=32,
                               description="Extra templates; each must contain {text}.")
    batch_size: int = Field(16, ge=1, le=512)
    max_text_tokens: int = Field(256, ge=8, le=4096)
    probe_size: int = Field(96, ge=8, le=10_000)
    max_prompts: int = Field(1, ge=1, le=16)
    extra_labelers: list[Literal["embedding"]] = Field(
        default_factory=lambda: ["embedding"])  # type: ignore[arg-type]  # lambda: list[str]
    label_model: Literal["auto", "gaussian", "weighted", "dawid_skene"] = Field(
        "auto", description="How annotators are combined; auto: chosen per job without labels.")
    min_skill: float = Field(0.02, ge=0, le=0.5, description=(
        "End the job (annotators_at_chance) when no annotator is this far above chance; 0: off."))
    reprompt: bool = True
    reprompt_fraction: float = Field(0.15, ge=0, le=1)
    reprompt_confidence: float = Field(0.65, ge=0, le=1)
    demos: int = Field(4, ge=0, le=16)


class AdapterIn(Strict):
    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=256)
    alpha: int | None = Field(None, ge=1, le=1024)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class StudentIn(Strict):
    model: str | None = Field(None, max_length=500)
    adapter: AdapterIn = Field(default_factory=AdapterIn)
    max_length: int = Field(128, ge=8, le=512)


class DataIn(Strict):
    dataset_id: str = Field(min_length=1, max_length=40)
    # "" is refused, not read as "no eval set": an empty id is a client bug, never a choice.
    eval_dataset_id: str | None = Field(None, min_length=1, max_length=40)


class DistillationIn(Strict):
    strategy: Literal["adaptive", "vanilla_kd", "pseudo_label"] = "adaptive"
    epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=1024)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    temperature: float = Field(2.0, ge=0.5, le=20)
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random seed (numpy's range).")
    representations: bool | Literal["auto"] = Field(
        "auto", description="Align with the teacher's hidden states; auto: where they pay.")
    progressive: bool | Literal["auto"] = Field(
        "auto", description="align -> easy -> full -> refine; auto: where the easy phase pays.")
    self_training_rounds: int = Field(
        2, ge=0, le=5, description="Rounds in which the student joins the label model.")
    align_loss: Literal["contrastive", "mse"] = "contrastive"
    easy_fraction: float = Field(0.5, ge=0.05, le=1)


class NotifyIn(Strict):
    url: str = Field(min_length=1, max_length=2000,
                     description="http(s) URL POSTed the signed job object when the job ends "
                                 "and when it registers a version; the operator's "
                                 "TAILOR_WEBHOOK_ALLOW decides which hosts may be named.")


class JobCreate(Strict):
    name: str = Field(pattern=NAME_PATTERN,
                      description="Model name the student registers under (lowercase).")
    task: TaskIn
    teacher: TeacherIn = Field(default_factory=TeacherIn)
    student: StudentIn = Field(default_factory=StudentIn)
    data: DataIn
    distillation: DistillationIn = Field(default_factory=DistillationIn)
    notify: NotifyIn | None = Field(None, description="Webhook: see README, Webhooks.")


class PhaseEstimate(BaseModel):
    seconds: float = Field(ge=0)


class RateOut(BaseModel):
    value: float
    basis: Literal["measured on this worker class", "documented default"]


class EstimateOut(BaseModel):
    """What a job would cost, from the engine's own counts and measured or default rates."""

    texts: int = Field(ge=0, description="Corpus texts plus labeled eval texts.")
    teacher_calls: int = Field(ge=0, description="Teacher calls the strategy expects (texts "
                               "already in the teacher cache cost less).")
    training_steps: int = Field(ge=0, description="Student steps of the schedule (refine "
                                "counted at its largest).")
    phases: dict[Literal["annotate", "distill", "evaluate"], PhaseEstimate]
    seconds: float = Field(ge=0, description="Sum of the phases, wall seconds on one worker.")
    basis: Literal["measured on this worker class", "documented default"] = Field(
        description="`measured on this worker class` when every rate came from recently "
                    "succeeded jobs with the same teacher and student; see `rates`.")
    rates: dict[str, RateOut] = Field(description="teacher_calls_per_s, teacher_load_s, "
                                      "student_steps_per_s, student_ms_per_text.")


class DryRunOut(BaseModel):
    dry_run: Literal[True] = True
    estimate: EstimateOut


class JobError(BaseModel):
    code: str
    message: str


class RunWarningOut(BaseModel):
    """A result that should not be trusted as it stands (stable `code`, e.g.
    `teacher_one_class`, `holdout_too_small`, `student_below_majority`)."""

    code: str
    message: str


class ProgressDetailOut(BaseModel):
    """Counts of the stage a running job is in, updated every few seconds (at most about
    once a second): teacher texts during annotation, training steps during distillation."""

    stage: Literal["annotate", "distill"]
    done: int = Field(ge=0)
    total: int = Field(ge=0, description="Expected units; for `annotate` the strategy's "
                       "estimate of teacher calls (grows to `done` if it ran short).")
    unit: Literal["texts", "steps"]
    rate_per_s: float | None = Field(description="Units per second over the last 30 s; "
                                                 "null until measured.")
    eta_s: float | None = Field(description="Seconds left in this stage at that rate; null "
                                            "while unknown.")
    updated_at: datetime


class ModelRef(BaseModel):
    name: str
    version: int


class JobOut(BaseModel):
    id: str
    name: str
    state: str
    phase: str | None
    progress: float = Field(ge=0, le=1)
    progress_detail: ProgressDetailOut | None = Field(
        None, description="While annotation or training runs: done of total, rate, ETA.")
    metrics: dict[str, Any]
    warnings: list[RunWarningOut] = Field(
        default_factory=list, description="Set when the job succeeds: degenerate results "
        "the engine found; its version needs `force` to take an alias.")
    error: JobError | None
    model: ModelRef | None
    attempts: int
    cancel_requested: bool
    spec: dict[str, Any]
    owner: str = Field(description="Id of the API key that submitted it ('local' with auth "
                                   "off, 'admin' for jobs older than ownership).")
    worker: str | None = Field(
        None, description="Celery node name (`tailor-<pid>@<host>`) of the worker that "
        "claimed the job: it holds the lease until `lease_expires_at` (renewed while it "
        "runs); once the job is final, or back in the queue after its worker died, the last "
        "one that ran it. Null until a worker claims it.")
    lease_expires_at: datetime | None = Field(
        None, description="When the worker's lease runs out unless renewed; null when no "
        "worker holds the job.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobOut]
    next_offset: int | None = None
