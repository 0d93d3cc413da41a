"""The job spec as plain data: completed once, checked against the registries, loaded.

A job spec is the POST /jobs body: `task`, `teacher`, `student` and `distillation` are the
sections of worker/distill/config.py (`name`, `data`, `notify` belong to the service). The API
completes a spec once, at submission, and stores it; the worker, the benchmarks and notebooks
complete theirs with the same `complete_spec` and build the engine's config with
`load_config`, so the stored spec is exactly what the engine runs.

Names that a registry owns are read from it here, never restated: strategies
(worker/distill/strategies.py), extra labelers (labelers.py), alignment losses (losses.py) and
label models (judge.py).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, fields, is_dataclass
from typing import Any

from worker.distill.config import SECTIONS, ConfigError, EngineConfig, field_types
from worker.distill.judge import LABEL_MODELS
from worker.distill.labelers import LABELERS
from worker.distill.losses import ALIGN_LOSSES
from worker.distill.strategies import STRATEGIES

AUTO = "auto"  # teacher.label_model: the judge picks among LABEL_MODELS per job


def choices() -> dict[str, tuple[str, ...]]:
    """The names each registry-named field may take, by dotted field (a list field: each
    item's), read from the registries: `{"distillation.strategy": ("adaptive", ...), ...}`."""
    return {"teacher.extra_labelers": tuple(LABELERS),
            "teacher.label_model": (AUTO, *LABEL_MODELS),
            "distillation.strategy": tuple(STRATEGIES),
            "distillation.align_loss": tuple(ALIGN_LOSSES)}


def check_names(cfg: EngineConfig) -> None:
    """Refuse a name no registry knows.

    Raises:
        ConfigError: naming the field (`distillation.strategy`, ...) and the known names.
    """
    for path, names in choices().items():
        section, name = path.split(".")
        value = getattr(getattr(cfg, section), name)
        for item in value if isinstance(value, list) else [value]:
            if item not in names:
                raise ConfigError(path, f"unknown {item!r}; must be one of {list(names)}")


def complete_spec(spec: Mapping[str, Any], *, teacher_model: str,
                  student_model: str) -> dict[str, Any]:
    """A copy of `spec` with every engine default filled in, and the given models where the
    spec names none (null or absent): what submission stores and the engine runs.

    Pure data, nothing is checked (`load_config` does that): keys outside the engine's
    sections are kept as they are, and so is a value of the wrong shape.
    """
    out = copy.deepcopy(dict(spec))
    for name, section in SECTIONS.items():
        if name in out or name != "task":
            out[name] = _filled(section, out.get(name, {}))
    for name, model in (("teacher", teacher_model), ("student", student_model)):
        if isinstance(out[name], dict) and not out[name].get("model"):
            out[name]["model"] = model
    return out


def load_config(spec: Mapping[str, Any]) -> EngineConfig:
    """The engine's config from a (complete) spec; extra keys such as `name` are ignored.

    Raises:
        ConfigError: naming the field that cannot work or the name no registry knows.
    """
    cfg = EngineConfig.from_dict(spec)
    check_names(cfg)
    return cfg


def _filled(cls: type, data: Any) -> Any:
    """`data` (a dict for dataclass `cls`) with the defaults of the fields it lacks."""
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    types = field_types(cls)
    for f in fields(cls):
        tp = types[f.name]
        if f.name in out:
            out[f.name] = _filled_value(tp, out[f.name])
        elif f.default is not MISSING:
            out[f.name] = copy.deepcopy(f.default)
        elif f.default_factory is not MISSING:
            value = f.default_factory()
            out[f.name] = (asdict(value) if is_dataclass(value) and not isinstance(value, type)
                           else value)
    return out


def _filled_value(tp: Any, value: Any) -> Any:
    if is_dataclass(tp):
        return _filled(typing.cast(type, tp), value)
    item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
    if item is not None and is_dataclass(item) and isinstance(value, list):
        return [_filled(typing.cast(type, item), v) for v in value]
    return value
