"""Engine configuration: the ONE declaration of a job spec.

One dataclass per concern, the way peft declares its configs: every field carries its
default, its bounds and its help (with the reason for the default) in `field(metadata=...)`,
and `__post_init__` refuses what cannot work, naming the dotted field. The POST /jobs request
model and its OpenAPI schema are derived from these fields (app/jobs/schemas.py), so the
API documents and enforces exactly these defaults and bounds. Names a registry owns
(strategies, labelers, alignment losses, label models) are not restated here: they are
checked against the registries by worker/distill/spec.py.

Metadata keys: `help` (text), `ge` / `le` / `gt` / `lt` (numbers), `min_length` /
`max_length` (characters of a string, items of a list) — pydantic's names, so the schema
takes them as they are.
"""

from __future__ import annotations

import re
import types
import typing
import unicodedata
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

TEXT_PLACEHOLDER = "{text}"
# Label names: letters of any script (crisis feeds are multilingual and uploads take labels in
# any script, so an eval set labelled "فيضان" must be usable), combining marks (Devanagari
# and Arabic words need them), digits, and a few separators. No control or format characters,
# nothing that is only punctuation, no surrounding spaces (" crisis" would never match the
# "crisis" of an eval set).
LABEL_MAX_CHARS = 64
LABEL_PUNCTUATION = frozenset(" _.-/")
LABEL_RULE = (f"must be 1-{LABEL_MAX_CHARS} letters (any script), digits, marks, spaces or "
              "_ . - /, start with a letter or digit and not end with a space")
BOUND_KEYS = ("ge", "le", "gt", "lt", "min_length", "max_length")
# Bounds on each item of a list of strings (the schema puts them on the list's `items`).
ITEM_KEYS = ("item_max_length", "item_pattern")
# A module name as peft matches it (the name, or a dotted suffix of the module's path): one
# word per segment. This refuses what peft would read another way, or could never match: a
# regex (peft compiles a *string* target_modules as one), an empty name, spaces, controls.
MODULE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"


def label_name_ok(name: str) -> bool:
    """True when `name` can name a label (see LABEL_RULE)."""
    if not 1 <= len(name) <= LABEL_MAX_CHARS or name[-1] == " ":
        return False
    if unicodedata.category(name[0])[0] not in "LN":
        return False
    return all(unicodedata.category(ch)[0] in "LMN" or ch in LABEL_PUNCTUATION for ch in name)


def label_key(text: str) -> str:
    """What two labels (or answer words) must not share: case and Unicode form folded."""
    return unicodedata.normalize("NFC", text).strip().casefold()


class ConfigError(ValueError):
    """A configuration that cannot work; `field` is the dotted path of the culprit."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


def setting(default: Any = MISSING, *, help: str, factory: Any = MISSING,
            **bounds: float | str) -> Any:
    """A config field: its default (or `factory` for a mutable one), help and bounds.

    `bounds` takes pydantic's keyword names (BOUND_KEYS) and, for a list of strings, the
    bounds of each item (ITEM_KEYS); anything else is a TypeError.
    """
    unknown = set(bounds) - set(BOUND_KEYS) - set(ITEM_KEYS)
    if unknown:
        raise TypeError(f"unknown bounds {sorted(unknown)}")
    meta = {"help": help, **bounds}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _allowed(tp: Any) -> set[Any] | None:
    """The values a type admits when it is a finite set (bool, Literal, unions of them)."""
    if tp is bool:
        return {True, False}
    if typing.get_origin(tp) is Literal:
        return set(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [_allowed(arg) for arg in typing.get_args(tp) if arg is not type(None)]
        if any(m is None for m in members):
            return None
        return set().union(*members)  # type: ignore[arg-type]
    return None


def _out_of_bounds(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (("ge" in meta and value < meta["ge"]) or ("le" in meta and value > meta["le"])
            or ("gt" in meta and value <= meta["gt"]) or ("lt" in meta and value >= meta["lt"]))


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """A config dataclass's resolved field types (its annotations are strings)."""
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return _FIELD_TYPES[cls]


def _bounds_text(meta: typing.Mapping[str, Any]) -> str:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = (meta["le"], "]") if "le" in meta else (meta["lt"], ")") if "lt" in meta else None
    if lo and hi and lo[0] == "[" and hi[1] == "]":
        return f"must be between {lo[1]} and {hi[0]}"
    if lo and hi:
        return f"must be in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f"must be {'at least' if lo[0] == '[' else 'more than'} {lo[1]}"
    assert hi is not None
    return f"must be {'at most' if hi[1] == ']' else 'less than'} {hi[0]}"


def check_fields(obj: Any, section: str) -> None:
    """Refuse a value outside its field's declared bounds or choices.

    Raises:
        ConfigError: naming `section.field`.
    """
    hints = field_types(type(obj))
    for f in fields(obj):
        value, meta, path = getattr(obj, f.name), f.metadata, f"{section}.{f.name}"
        if value is None:
            continue
        allowed = _allowed(hints[f.name])
        if allowed is not None and value not in allowed:
            shown = ", ".join(sorted(repr(v).lower() if isinstance(v, bool) else repr(v)
                                     for v in allowed))
            raise ConfigError(path, f"must be one of {shown}")
        if _out_of_bounds(value, meta):
            raise ConfigError(path, _bounds_text(meta))
        if isinstance(value, str | list):
            unit = "character(s)" if isinstance(value, str) else "item(s)"
            if "min_length" in meta and len(value) < meta["min_length"]:
                raise ConfigError(path, f"needs at least {meta['min_length']} {unit}")
            if "max_length" in meta and len(value) > meta["max_length"]:
                raise ConfigError(path, f"takes at most {meta['max_length']} {unit}")
        if isinstance(value, list):
            _check_items(value, meta, path)


def _check_items(items: list[Any], meta: typing.Mapping[str, Any], path: str) -> None:
    """Refuse an item of a list of strings outside the field's ITEM_KEYS bounds."""
    if not any(key in meta for key in ITEM_KEYS):
        return
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", "must be a string")
        if "item_max_length" in meta and len(item) > meta["item_max_length"]:
            raise ConfigError(f"{path}[{i}]",
                              f"takes at most {meta['item_max_length']} character(s)")
        if "item_pattern" in meta and not re.fullmatch(meta["item_pattern"], item):
            raise ConfigError(f"{path}[{i}]", f"{item[:80]!r} must match {meta['item_pattern']}")


def _refuse_placeholder(value: Any, path: str) -> None:
    """Refuse {text} in a task string: it is pasted into the prompt templates, where a second
    {text} would take the message again (and the white-box teacher could not split the
    prompt around the text)."""
    if isinstance(value, str) and TEXT_PLACEHOLDER in value:
        raise ConfigError(path, "may not contain {text}: only a prompt template (teacher."
                          "prompts) says where the message goes")


@dataclass
class LabelSpec:
    """One output class (each field's `help` says what it is)."""

    name: str = setting(help="What /classify returns; " + LABEL_RULE + ".",
                        min_length=1, max_length=LABEL_MAX_CHARS)
    description: str = setting("", help="What the label means; goes into the teacher's "
                               "prompts.", max_length=2000)
    verbalizer: str | None = setting(None, help="The word the teacher answers with (default: "
                                     "the name, `_` read as a space).",
                                     min_length=1, max_length=LABEL_MAX_CHARS)

    @property
    def word(self) -> str:
        return self.verbalizer or self.name.replace("_", " ")


@dataclass
class TaskConfig:
    """What to classify."""

    labels: list[LabelSpec] = setting(help="Two or more distinct labels.",
                                      min_length=2, max_length=64)
    multi_label: bool = setting(False, help="Each text may carry any subset of the labels.")
    instruction: str = setting("", help="Domain context for the teacher (\"You monitor news "
                               "for ...\").", max_length=4000)

    def __post_init__(self) -> None:
        self.labels = [lab if isinstance(lab, LabelSpec) else LabelSpec(**lab)
                       for lab in self.labels]
        if len(self.labels) < 2:
            raise ConfigError("task.labels", "at least 2 labels are needed")
        seen: set[str] = set()
        words: set[str] = set()
        for i, lab in enumerate(self.labels):
            if not isinstance(lab.name, str) or not label_name_ok(lab.name):
                raise ConfigError(f"task.labels[{i}].name", f"{lab.name!r} {LABEL_RULE}")
            if label_key(lab.name) in seen:
                raise ConfigError(f"task.labels[{i}].name", f"duplicate label {lab.name!r}")
            seen.add(label_key(lab.name))
            check_fields(lab, f"task.labels[{i}]")
            _refuse_placeholder(lab.description, f"task.labels[{i}].description")
            _refuse_placeholder(lab.verbalizer, f"task.labels[{i}].verbalizer")
            if isinstance(lab.verbalizer, str) and any(
                    unicodedata.category(ch) in ("Cc", "Cf") for ch in lab.verbalizer):
                raise ConfigError(f"task.labels[{i}].verbalizer",
                                  "an answer word holds no control or format characters")
            if label_key(lab.word) in words:
                raise ConfigError(f"task.labels[{i}].verbalizer",
                                  f"two labels answer with the word {lab.word!r}")
            words.add(label_key(lab.word))
        check_fields(self, "task")
        _refuse_placeholder(self.instruction, "task.instruction")

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]


@dataclass
class TeacherConfig:
    """The teacher LLM, how it is asked, and how its answers are judged and combined."""

    model: str | None = setting(None, help="Path, pypi://pkg[==v]/path or hf://org/name; null: "
                                "the service default (filled in at submission).",
                                max_length=500)
    prompts: list[str] = setting(factory=list, help="Extra prompt templates; each must "
                                 "contain {text} once and is at most 4000 characters (the "
                                 "template is never truncated, unlike the text).",
                                 max_length=32, item_max_length=4000)
    batch_size: int = setting(16, help="Texts per forward pass; 16 keeps a 135M model near "
                              "peak CPU throughput.", ge=1, le=512)
    max_text_tokens: int = setting(256, help="Longer texts are truncated; news messages "
                                   "rarely exceed it.", ge=8, le=4096)
    prefix_cache: bool = setting(True, help="Encode the shared prompt prefix once and reuse "
                                 "its KV cache across texts.")
    precision: Literal["auto", "float32", "bfloat16"] = setting(
        "auto", help="Numbers a local teacher computes in. bfloat16: on CPU, matrix products "
        "in bfloat16 under torch.autocast (2.7x the float32 teacher's texts/s at 98.7% "
        "agreement with its decisions on the crisis probe, bench/results/teacher.md); on "
        "CUDA, bfloat16 weights. auto: bfloat16 where the device runs it natively (CUDA, a "
        "CPU with AVX512-BF16 or AMX), else float32. A black-box teacher ignores it.")
    probe_size: int = setting(96, help="Texts on which every candidate prompt is judged "
                              "(adaptive only); 96 gave stable accuracy estimates on crisis "
                              "news at a small share of the cost.", ge=8, le=10_000)
    probe_survivors: int = setting(3, help="With more candidate prompts than this, all "
                                   "are judged on half the probe first and only this many "
                                   "best on all of it (successive halving): on crisis news "
                                   "the best prompts lead by a wide margin after half, and "
                                   "it saves a third of the judging passes; 0: every prompt "
                                   "on the whole probe.", ge=0, le=64)
    max_prompts: int = setting(1, help="Prompts kept after judging; each costs one more "
                               "teacher pass over the data (a channel prompt one per label).",
                               ge=1, le=16)
    prompt_min_skill: float = setting(0.02, help="A prompt whose probe score (balanced "
                                      "accuracy above chance) is not above this is noise and "
                                      "is not kept (the best one is kept regardless).",
                                      ge=0, le=0.5)
    bootstrap_rounds: int = setting(50, help="Resamples of the probe behind each prompt "
                                    "score's spread; 50 keeps the spread steady to a few "
                                    "per cent at a negligible cost.", ge=10, le=1000)
    extra_labelers: list[str] = setting(factory=lambda: ["embedding"], help="Labelers "
                                        "joining the prompts in the label model (embedding: "
                                        "text vs. label-description similarity in the "
                                        "student base's embedding space).",
                                        max_length=16)
    label_model: str = setting("auto", help="How the judge combines annotators "
                               "(worker/distill/judge.py); auto: the one with the best "
                               "leave-one-source-out agreement, chosen per job without "
                               "labels.")
    min_skill: float = setting(0.02, help="End the job (annotators_at_chance) when no "
                               "annotator is this far above chance (its estimated balanced "
                               "accuracy plus two bootstrap spreads) instead of training a "
                               "near-random student; 0: off.", ge=0, le=0.5)
    min_skill_texts: int = setting(100, help="Corpus size from which the min_skill verdict "
                                   "is trusted; below it the run's warnings speak instead.",
                                   ge=1, le=1_000_000)
    reprompt: bool = setting(True, help="Re-ask uncertain or disputed texts with retrieved "
                             "solved examples.")
    reprompt_fraction: float = setting(0.15, help="At most this share of the corpus is "
                                       "re-asked (few-shot prompts are costlier); eval texts "
                                       "are never re-asked: the student does not train on "
                                       "them.", ge=0, le=1)
    reprompt_confidence: float = setting(0.65, help="Texts whose combined top probability "
                                         "is below this are uncertain.", ge=0, le=1)
    reprompt_mix: float = setting(0.5, help="Weight of the few-shot answer in a re-asked "
                                  "text's label (the rest: its first answer); half and half "
                                  "trusts neither alone.", ge=0, le=1)
    demos: int = setting(4, help="Solved examples shown per re-asked text.", ge=0, le=16)
    demo_share: float = setting(0.5, help="Examples come from this most confident share of "
                                "the corpus (confident labels make trustworthy examples).",
                                gt=0, le=1)
    demo_chars: int = setting(300, help="Examples are cut to this many characters: long "
                              "ones slow the teacher and rarely help.", ge=20, le=4000)

    def __post_init__(self) -> None:
        for i, template in enumerate(self.prompts):
            if TEXT_PLACEHOLDER not in template:
                raise ConfigError(f"teacher.prompts[{i}]",
                                  "a prompt template must contain the placeholder {text}")
            if template.count(TEXT_PLACEHOLDER) > 1:
                raise ConfigError(f"teacher.prompts[{i}]", "{text} may appear only once")
        check_fields(self, "teacher")


@dataclass
class AdapterConfig:
    """The peft adapter trained on the student."""

    type: Literal["lora"] = setting("lora", help="The adapter method; only lora for now.")
    r: int = setting(8, help="LoRA rank; 8 is enough for a classification head on a small "
                     "encoder.", ge=1, le=256)
    alpha: int | None = setting(None, help="LoRA scaling numerator; null: 2*r, the usual "
                                "choice.", ge=1, le=1024)
    dropout: float = setting(0.1, help="Dropout on the LoRA path; regularises with small "
                             "corpora.", ge=0, lt=1)
    target_modules: list[str] | None = setting(None, help="Names of the encoder modules to "
                                               "adapt (e.g. [\"query\", \"value\"]), each "
                                               "a module name or a dotted suffix of its path, "
                                               "never a regex; null: peft's choice for the "
                                               "architecture.", min_length=1, max_length=64,
                                               item_max_length=200,
                                               item_pattern=MODULE_NAME_PATTERN)

    def __post_init__(self) -> None:
        if self.target_modules is not None and not isinstance(self.target_modules, list):
            # peft would compile a string as a regex over every module path
            raise ConfigError("student.adapter.target_modules",
                              "must be a list of module names (or null)")
        check_fields(self, "student.adapter")

    @property
    def lora_alpha(self) -> int:
        return self.alpha or 2 * self.r


@dataclass
class StudentConfig:
    """The small encoder that is trained and served."""

    model: str | None = setting(None, help="Encoder path, pypi://pkg[==v]/path or "
                                "hf://org/name; null: the service default (filled in at "
                                "submission).", max_length=500)
    adapter: AdapterConfig = setting(factory=AdapterConfig, help="The peft adapter.")
    max_length: int = setting(128, help="Tokens per text; longer texts are truncated (and "
                              "/classify says so).", ge=8, le=512)

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig(**self.adapter)
        check_fields(self, "student")


@dataclass
class DistillConfig:
    """How knowledge moves from teacher to student."""

    strategy: str = setting("adaptive", help="adaptive (prompt pool, calibration, label-free "
                            "judging, re-prompting, progressive phases) or a baseline: "
                            "vanilla_kd (one fixed prompt, soft labels, one phase) or "
                            "pseudo_label (hard labels).")
    epochs: int = setting(3, help="Passes over the corpus in the main phase.", ge=1, le=100)
    batch_size: int = setting(32, help="Student batch size; 32 fits CPU caches and small "
                              "corpora.", ge=1, le=1024)
    learning_rate: float = setting(1e-3, help="For the LoRA weights and the head; LoRA "
                                   "tolerates larger rates than full fine-tuning.", gt=0, lt=1)
    temperature: float = setting(2.0, help="Softens teacher and student distributions in "
                                 "the KD loss (Hinton et al.).", ge=0.5, le=20)
    holdout_fraction: float = setting(0.15, help="Share of the corpus kept out of training "
                                      "to measure agreement with the teacher.", gt=0, lt=0.5)
    seed: int = setting(0, help="Makes splits, initialisation and order reproducible "
                        "(numpy's range).", ge=0, le=2**32 - 1)
    representations: bool | Literal["auto"] = setting(
        "auto", help="Align the student with the teacher's hidden states; auto: decided per "
        "job, where they carry more than the labels (worker/distill/decisions.py).")
    progressive: bool | Literal["auto"] = setting(
        "auto", help="align -> easy -> full -> refine (off: one confidence-weighted phase); "
        "auto: decided per job, where the easy phase pays.")
    self_training_rounds: int = setting(2, help="Rounds in which the trained student joins "
                                        "the label model as one more annotator and is "
                                        "trained on the refreshed targets; 0: off.",
                                        ge=0, le=5)
    align_loss: str = setting("contrastive", help="Representation loss: contrastive "
                              "(InfoNCE over the batch) or mse.")
    align_weight: float = setting(0.5, help="Weight of the representation term beside the "
                                  "label loss in the full phase; half keeps the labels "
                                  "first.", ge=0, le=10)
    easy_fraction: float = setting(0.5, help="Share of the most confident texts used in the "
                                   "easy phase.", ge=0.05, le=1)
    min_text_weight: float = setting(0.1, help="A text's loss weight grows from this (no "
                                     "confidence) to 1 (certain): never zero, an unsure "
                                     "label still says something.", ge=0, le=1)
    replay_ratio: float = setting(1.0, help="Refine trains on the disagreements plus this "
                                  "many random texts per disagreement, so the student does "
                                  "not forget the rest.", ge=0, le=10)

    def __post_init__(self) -> None:
        check_fields(self, "distillation")


SECTIONS = {"task": TaskConfig, "teacher": TeacherConfig, "student": StudentConfig,
            "distillation": DistillConfig}


@dataclass
class EngineConfig:
    """Everything one distillation run needs, besides the data."""

    task: TaskConfig
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distillation: DistillConfig = field(default_factory=DistillConfig)

    @classmethod
    def from_dict(cls, data: typing.Mapping[str, Any]) -> EngineConfig:
        """Build (and check) a config from plain JSON-like data (extra top-level keys, such
        as a job's `name` and `data`, are ignored).

        Raises:
            ConfigError: naming the field; `config` for an unknown or missing key.
        """
        if "task" not in data:
            raise ConfigError("task", "is required")
        try:
            return cls(**{name: section(**data.get(name, {}))
                          for name, section in SECTIONS.items()})
        except TypeError as exc:  # an unknown or missing key
            raise ConfigError("config", str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
