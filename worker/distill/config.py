"""Engine configuration: one dataclass per concern, defaults with reasons, checked on creation.

These configs are plain data. The API builds them from a job request (so bad input is refused
at submission), the worker rebuilds them from the stored spec, and every artifact saves them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

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


@dataclass
class LabelSpec:
    """One output class.

    Args:
        name: what /classify returns.
        description: what the label means; goes into the teacher's prompts.
        verbalizer: the word the teacher answers with; default: the name, `_` as spaces.
    """

    name: str
    description: str = ""
    verbalizer: str | None = None

    @property
    def word(self) -> str:
        return self.verbalizer or self.name.replace("_", " ")


@dataclass
class TaskConfig:
    """What to classify.

    Args:
        labels: two or more distinct labels.
        multi_label: each text may carry any subset of labels.
        instruction: domain context for the teacher ("You monitor news for ...").
    """

    labels: list[LabelSpec]
    multi_label: bool = False
    instruction: str = ""

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
            if label_key(lab.word) in words:
                raise ConfigError(f"task.labels[{i}].verbalizer",
                                  f"two labels answer with the word {lab.word!r}")
            words.add(label_key(lab.word))

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]


@dataclass
class TeacherConfig:
    """The teacher LLM and how it is asked.

    Args:
        model: model URI (local path, pypi://, hf://); empty means the service default.
        prompts: extra prompt templates; each must contain `{text}`.
        batch_size: texts per forward pass; 16 keeps a 135M model near peak CPU throughput.
        max_text_tokens: longer texts are truncated; news messages rarely exceed it.
        prefix_cache: encode the shared prompt prefix once and reuse its KV cache.
        probe_size: texts on which every candidate prompt is judged (adaptive only); 96 gave
            stable accuracy estimates on crisis news at a small share of the cost.
        max_prompts: prompts kept after judging; each costs one more teacher pass over the
            data (a channel prompt costs one pass per label).
        extra_labelers: labelers joining the prompts in the label model ("embedding": text
            vs. label-description similarity in the student base's embedding space).
        label_model: how the judge combines annotators (worker/distill/judge.py):
            "gaussian", "weighted", "dawid_skene", or "auto" (the one with the best
            leave-one-source-out agreement, decided per job without labels).
        min_skill: a job whose best annotator is not at least this far above chance (its
            estimated balanced accuracy plus two bootstrap spreads, on a corpus of 100 texts
            or more) ends with `annotators_at_chance` instead of training a near-random
            student; 0 turns the check off.
        reprompt: re-ask uncertain or disputed texts with retrieved solved examples.
        reprompt_fraction: at most this share of texts is re-asked (few-shot is costlier).
        reprompt_confidence: texts whose combined top probability is below this are uncertain.
        demos: solved examples shown per re-asked text.
    """

    model: str = ""
    prompts: list[str] = field(default_factory=list)
    batch_size: int = 16
    max_text_tokens: int = 256
    prefix_cache: bool = True
    probe_size: int = 96
    max_prompts: int = 1
    extra_labelers: list[str] = field(default_factory=lambda: ["embedding"])
    label_model: str = "auto"
    min_skill: float = 0.02
    reprompt: bool = True
    reprompt_fraction: float = 0.15
    reprompt_confidence: float = 0.65
    demos: int = 4

    def __post_init__(self) -> None:
        for i, template in enumerate(self.prompts):
            if TEXT_PLACEHOLDER not in template:
                raise ConfigError(f"teacher.prompts[{i}]",
                                  "a prompt template must contain the placeholder {text}")
            if template.count(TEXT_PLACEHOLDER) > 1:
                raise ConfigError(f"teacher.prompts[{i}]", "{text} may appear only once")
        if not 1 <= self.batch_size <= 512:
            raise ConfigError("teacher.batch_size", "must be between 1 and 512")
        if not 8 <= self.probe_size <= 10_000:
            raise ConfigError("teacher.probe_size", "must be between 8 and 10000")
        if not 1 <= self.max_prompts <= 16:
            raise ConfigError("teacher.max_prompts", "must be between 1 and 16")
        unknown = set(self.extra_labelers) - set(EXTRA_LABELERS)
        if unknown:
            raise ConfigError("teacher.extra_labelers",
                              f"unknown {sorted(unknown)}; known: {list(EXTRA_LABELERS)}")
        if not 0.0 <= self.reprompt_fraction <= 1.0:
            raise ConfigError("teacher.reprompt_fraction", "must be in [0, 1]")
        if not 0.0 <= self.min_skill <= 0.5:
            raise ConfigError("teacher.min_skill", "must be in [0, 0.5]")
        if self.label_model not in ("auto", *LABEL_MODELS):
            raise ConfigError("teacher.label_model", f"must be one of {['auto', *LABEL_MODELS]}")
        if not 0 <= self.demos <= 16:
            raise ConfigError("teacher.demos", "must be between 0 and 16")


@dataclass
class AdapterConfig:
    """The peft adapter trained on the student.

    Args:
        type: only "lora" for now.
        r: LoRA rank; 8 is enough for a classification head on a small encoder.
        alpha: LoRA scaling numerator; 2*r is the usual choice.
        dropout: on the LoRA path, regularises with small corpora.
        target_modules: module names to adapt; None lets peft pick per architecture.
    """

    type: str = "lora"
    r: int = 8
    alpha: int | None = None
    dropout: float = 0.1
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.type != "lora":
            raise ConfigError("student.adapter.type", "only 'lora' is supported")
        if not 1 <= self.r <= 256:
            raise ConfigError("student.adapter.r", "must be between 1 and 256")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("student.adapter.dropout", "must be in [0, 1)")

    @property
    def lora_alpha(self) -> int:
        return self.alpha or 2 * self.r


@dataclass
class StudentConfig:
    """The small encoder that is trained and served.

    Args:
        model: encoder URI; empty means the service default.
        adapter: the peft adapter settings.
        max_length: tokens per text; longer texts are truncated (and /classify says so).
    """

    model: str = ""
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    max_length: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig(**self.adapter)
        if not 8 <= self.max_length <= 512:
            raise ConfigError("student.max_length", "must be between 8 and 512")


STRATEGIES = ("adaptive", "vanilla_kd", "pseudo_label")
LABEL_MODELS = ("gaussian", "weighted", "dawid_skene")  # worker/distill/judge.py
EXTRA_LABELERS = ("embedding",)


@dataclass
class DistillConfig:
    """How knowledge moves from teacher to student.

    Args:
        strategy: "adaptive" (default: prompt pool, calibration, label-free judging,
            re-prompting, progressive phases) or a baseline: "vanilla_kd" (one fixed prompt,
            soft labels, no phases, no representations) or "pseudo_label" (hard labels).
        epochs: passes over the corpus in the main phase.
        batch_size: student batch size; 32 fits CPU caches and small corpora.
        learning_rate: for LoRA weights and the head; LoRA tolerates larger rates than
            full fine-tuning.
        temperature: softens teacher and student distributions in the KD loss (Hinton et al.).
        holdout_fraction: share of the corpus kept out of training to measure agreement.
        seed: makes splits, initialisation and order reproducible.
        representations: align the student with the teacher's hidden states (adaptive);
            "auto" decides per job whether the states carry more than the labels
            (worker/distill/decisions.py).
        progressive: align -> easy -> full -> refine; off means one confidence-weighted
            phase; "auto" decides per job whether the easy phase pays.
        self_training_rounds: rounds in which the trained student joins the label model as
            one more annotator, the targets are refreshed and the student trained on
            (worker/distill/self_training.py); 0 turns self-training off.
        align_loss: "contrastive" (InfoNCE over the batch) or "mse".
        easy_fraction: share of most confident texts used in the easy phase.
    """

    strategy: str = "adaptive"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    temperature: float = 2.0
    holdout_fraction: float = 0.15
    seed: int = 0
    representations: bool | str = "auto"
    progressive: bool | str = "auto"
    self_training_rounds: int = 2
    align_loss: str = "contrastive"
    easy_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.align_loss not in ("contrastive", "mse"):
            raise ConfigError("distillation.align_loss", "must be 'contrastive' or 'mse'")
        if not 0.05 <= self.easy_fraction <= 1.0:
            raise ConfigError("distillation.easy_fraction", "must be in [0.05, 1]")
        if self.strategy not in STRATEGIES:
            raise ConfigError("distillation.strategy", f"must be one of {list(STRATEGIES)}")
        if not 1 <= self.epochs <= 100:
            raise ConfigError("distillation.epochs", "must be between 1 and 100")
        if not 0.0 < self.learning_rate < 1.0:
            raise ConfigError("distillation.learning_rate", "must be in (0, 1)")
        if not 0.5 <= self.temperature <= 20:
            raise ConfigError("distillation.temperature", "must be between 0.5 and 20")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ConfigError("distillation.holdout_fraction", "must be in (0, 0.5)")
        for name in ("representations", "progressive"):
            if getattr(self, name) not in (True, False, "auto"):
                raise ConfigError(f"distillation.{name}", "must be true, false or \"auto\"")
        if not 0 <= self.self_training_rounds <= 5:
            raise ConfigError("distillation.self_training_rounds", "must be between 0 and 5")


@dataclass
class EngineConfig:
    """Everything one distillation run needs, besides the data."""

    task: TaskConfig
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distillation: DistillConfig = field(default_factory=DistillConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineConfig:
        """Build (and check) a config from plain JSON-like data."""
        try:
            return cls(
                task=TaskConfig(**data["task"]),
                teacher=TeacherConfig(**data.get("teacher", {})),
                student=StudentConfig(**data.get("student", {})),
                distillation=DistillConfig(**data.get("distillation", {})),
            )
        except TypeError as exc:  # an unknown or missing key
            raise ConfigError("config", str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
