"""Request and response shapes for /jobs (DESIGN.md section 3).

The request's engine sections are derived from worker/distill/config.py, never restated.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)
from pydantic_core import PydanticCustomError

from worker.distill.config import (
    BOUND_KEYS,
    ITEM_KEYS,
    AdapterConfig,
    DistillConfig,
    LabelSpec,
    StudentConfig,
    TaskConfig,
    TeacherConfig,
    field_types,
)
from worker.distill.spec import choices

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"


class Strict(BaseModel):
    # strict: a boolean is not an integer, a number is not a string (issue 11.7)
    model_config = ConfigDict(extra="forbid", strict=True)


# The engine's sections of the request, derived from worker/distill/config.py (the one
# declaration of the spec): every field with its default, bounds and help; registry-named
# fields take the registries' names. Named as before so clients' generated code keeps working.
SECTION_MODELS = {LabelSpec: "LabelIn", TaskConfig: "TaskIn", TeacherConfig: "TeacherIn",
                  AdapterConfig: "AdapterIn", StudentConfig: "StudentIn",
                  DistillConfig: "DistillationIn"}


def _literal_values(tp: Any) -> tuple[Any, ...]:
    return tuple(v for arg in typing.get_args(tp) if typing.get_origin(arg) is Literal
                 for v in typing.get_args(arg))


def _one_error(values: tuple[Any, ...]) -> Any:
    """A wrap validator that reports a failed `bool | Literal[...]` as one error."""
    names = ["true", "false", *(repr(v) for v in values)]
    allowed = ", ".join(names[:-1]) + " or " + names[-1]

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("flag_or_choice", f"Input should be {allowed}") from None
    return validate


def _is_flag_or_choice(tp: Any) -> bool:
    """True for `bool | Literal[...]` (e.g. a switch that may also be "auto")."""
    args = typing.get_args(tp)
    return (typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in args
            and all(a is bool or typing.get_origin(a) is Literal for a in args))


def engine_model(cls: type, path: str, names: dict[str, tuple[str, ...]]) -> type[BaseModel]:
    """The strict pydantic model of config dataclass `cls` (at dotted `path` of the spec).

    Each field keeps the dataclass's default (a factory's value, so the schema shows it),
    `help` as description and the bounds under pydantic's names (ITEM_KEYS on each item of a
    list of strings); a nested dataclass becomes
    a nested model; a field in `names` (dotted path -> names) takes only those names.
    """
    types = field_types(cls)
    specs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp, where = types[f.name], f"{path}.{f.name}"
        meta = dict(f.metadata)
        kwargs = {k: meta[k] for k in BOUND_KEYS if k in meta}
        if where in names:
            choice = Literal[names[where]]  # type: ignore[valid-type]
            tp = list[choice] if typing.get_origin(tp) is list else choice
        elif dataclasses.is_dataclass(tp):
            tp = engine_model(typing.cast(type, tp), where, names)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            tp = list[engine_model(typing.get_args(tp)[0], where, names)]  # type: ignore[misc]
        elif _is_flag_or_choice(tp):
            # `bool | Literal["auto"]` as one enum: one error naming the field, not one per
            # union member with pydantic's member tags in its path ("representations.bool").
            tp = Annotated[tp, WrapValidator(_one_error(_literal_values(tp)))]
        elif any(k in meta for k in ITEM_KEYS):  # a list of strings, each item bounded
            item = Annotated[str, Field(max_length=meta.get("item_max_length"),
                                        pattern=meta.get("item_pattern"))]
            tp = list[item] | None if type(None) in typing.get_args(tp) else list[item]
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            if dataclasses.is_dataclass(made):
                kwargs["default_factory"] = tp
            else:
                kwargs["default"] = made
        specs[f.name] = (tp, Field(description=meta.get("help"), **kwargs))
    return create_model(SECTION_MODELS[cls], __base__=Strict,
                        __doc__=(cls.__doc__ or "").strip(), **specs)


_NAMES = choices()
TaskIn = engine_model(TaskConfig, "task", _NAMES)
TeacherIn = engine_model(TeacherConfig, "teacher", _NAMES)
StudentIn = engine_model(StudentConfig, "student", _NAMES)
DistillationIn = engine_model(DistillConfig, "distillation", _NAMES)


class DataIn(Strict):
    dataset_id: str = Field(min_length=1, max_length=40)
    # "" is refused, not read as "no eval set": an empty id is a client bug, never a choice.
    eval_dataset_id: str | None = Field(None, min_length=1, max_length=40)


class NotifyIn(Strict):
    url: str = Field(min_length=1, max_length=2000,
                     description="http(s) URL POSTed the signed job object when the job ends "
                                 "and when it registers a version; the operator's "
                                 "TAILOR_WEBHOOK_ALLOW decides which hosts may be named.")


# The engine's sections are derived at import (their types exist only at run time); the
# service's own fields are declared here, so the type checker sees them.
_EngineSections = create_model(
    "_EngineSections", __base__=Strict,
    task=(TaskIn, ...),
    teacher=(TeacherIn, Field(default_factory=TeacherIn)),
    student=(StudentIn, Field(default_factory=StudentIn)),
    distillation=(DistillationIn, Field(default_factory=DistillationIn)))


class JobCreate(_EngineSections):
    """A job spec: the engine's sections (worker/distill/config.py), the data, a webhook."""

    name: str = Field(pattern=NAME_PATTERN,
                      description="Model name the student registers under (lowercase).")
    data: DataIn
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
