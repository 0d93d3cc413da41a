"""Prompts: templates built from the task, each asking the teacher to pick one of a few words.

A `Prompt` is a user message containing `{text}` plus the option words whose next-token
probabilities become the soft label. Single-label tasks get one multiple-choice question over
the labels; multi-label tasks get one yes/no question per label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.distill.config import TEXT_PLACEHOLDER, TaskConfig

YES_NO = ("yes", "no")


@dataclass(frozen=True)
class Prompt:
    """A filled-in template.

    Args:
        name: short human name ("default", "user-1", ...).
        template: the user message, with `{text}` still open.
        options: the answer words, one per output (labels, or yes/no).
        label: for multi-label yes/no prompts, the label asked about.
    """

    name: str
    template: str
    options: tuple[str, ...]
    label: str | None = None

    @property
    def id(self) -> str:
        """Content hash: the teacher cache key depends on what is asked, not on its name."""
        body = "\x1f".join((self.template, *self.options))
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def render(self, text: str) -> str:
        return self.template.replace(TEXT_PLACEHOLDER, text)


def label_list(task: TaskConfig) -> str:
    lines = []
    for lab in task.labels:
        lines.append(f"- {lab.word}: {lab.description}" if lab.description else f"- {lab.word}")
    return "\n".join(lines)


def fill(template: str, task: TaskConfig) -> str:
    """Fill `{labels}` and `{instruction}` in a template, leaving `{text}` open."""
    return (template.replace("{labels}", label_list(task))
            .replace("{instruction}", task.instruction.strip())
            .strip())


DEFAULT_SINGLE = (
    "{instruction}\n"
    "Classify the message into exactly one of these categories:\n{labels}\n\n"
    "Message: {text}\n\n"
    "Answer with the category name only."
)
DEFAULT_MULTI = (
    "{instruction}\n"
    "Does the message below fall under \"{word}\"{description}?\n\n"
    "Message: {text}\n\n"
    "Answer yes or no."
)


def default_prompts(task: TaskConfig) -> list[Prompt]:
    """The one fixed prompt (or one per label, for multi-label) that vanilla KD uses."""
    if not task.multi_label:
        return [Prompt("default", fill(DEFAULT_SINGLE, task),
                       tuple(lab.word for lab in task.labels))]
    prompts = []
    for lab in task.labels:
        desc = f" ({lab.description})" if lab.description else ""
        template = DEFAULT_MULTI.replace("{word}", lab.word).replace("{description}", desc)
        prompts.append(Prompt(f"default:{lab.name}", fill(template, task), YES_NO, lab.name))
    return prompts


def user_prompts(task: TaskConfig, templates: list[str]) -> list[Prompt]:
    """Turn user-supplied templates into prompts over the task's label words."""
    if task.multi_label:
        prompts = []
        for i, template in enumerate(templates):
            for lab in task.labels:
                filled = fill(template.replace("{label}", lab.word), task)
                prompts.append(Prompt(f"user-{i + 1}:{lab.name}", filled, YES_NO, lab.name))
        return prompts
    options = tuple(lab.word for lab in task.labels)
    return [Prompt(f"user-{i + 1}", fill(t, task), options) for i, t in enumerate(templates)]
