"""Prompts: templates built from the task, each asking the teacher to pick one of a few words.

A `Prompt` is a user message containing `{text}` plus the option words whose next-token
probabilities become the soft label. Single-label tasks get one multiple-choice question over
the labels; multi-label tasks get one yes/no question per label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.distill.config import TEXT_PLACEHOLDER, LabelSpec, TaskConfig

YES_NO = ("yes", "no")


@dataclass(frozen=True)
class Prompt:
    """A filled-in template.

    Args:
        name: short human name ("default", "user-1", ...).
        template: the user message, with `{text}` still open.
        options: the answer words, one per output (labels, or yes/no).
        label: for multi-label yes/no prompts, the label asked about.
        kind: "choice" (next-token answer after the prompt) or "channel" (how likely the
            text is after each label's prefix: the noisy-channel direction, Min et al. 2022).
        prefixes: for "channel", one prefix per output, in option order.
    """

    name: str
    template: str
    options: tuple[str, ...]
    label: str | None = None
    kind: str = "choice"
    prefixes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """Content hash: the teacher cache key depends on what is asked, not on its name."""
        parts = (self.template, *self.options)
        if self.kind != "choice":
            parts = (self.kind, *parts, *self.prefixes)
        body = "\x1f".join(parts)
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


# ---------------------------------------------------------------- the adaptive pool
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Several phrasings of one question: small teachers answer some far better than others, and
# the label-free judge (worker.distill.label_model) decides which to trust.
SINGLE_POOL = {
    "question": ("{instruction}\n\nMessage: {text}\n\n"
                 "Which of these best describes the message: {words}?\n"
                 "Answer with one of: {words}."),
    "letters": ("{instruction}\nRead the message and pick the matching option.\n\n"
                "Message: {text}\n\nOptions:\n{lettered}\n\nAnswer with the letter only."),
    "category": ("Categories:\n{labels}\n\n{instruction}\n"
                 "Which category does this message belong to?\n\"{text}\"\n\nCategory:"),
}
# Noisy-channel prefixes: the text's likelihood after each label's prefix is the score.
CHANNEL_POOL = {
    "channel-about": "The following text is about {label}.\n",
    "channel-category": "Category: {word}. {description}.\nMessage:\n",
}
BINARY_YES_NO = ("{instruction}\n\nMessage: {text}\n\n"
                 "Question: is this message about {first}? Answer yes or no.")
MULTI_POOL = {
    "mention": "Message: {text}\n\nIs this message about {word}{description}? Answer yes or no.",
    "statement": ("{instruction}\nText: {text}\n\nStatement: the text is about {word}"
                  "{description}.\nIs the statement true? Answer yes or no."),
}


def _describe(lab: LabelSpec) -> str:
    return f"{lab.word} ({lab.description})" if lab.description else lab.word


def prompt_pool(task: TaskConfig, templates: list[str]) -> list[list[Prompt]]:
    """Candidate prompts per sub-question: one group for single-label, one per label for
    multi-label. The default prompt comes first in each group, user templates last."""
    user = user_prompts(task, templates)
    if not task.multi_label:
        words = tuple(lab.word for lab in task.labels)
        group = default_prompts(task)
        for name, template in SINGLE_POOL.items():
            filled = (template.replace("{words}", ", ".join(words))
                      .replace("{lettered}", "\n".join(
                          f"{LETTERS[i]}. {_describe(lab)}" for i, lab in enumerate(task.labels))))
            options = tuple(LETTERS[: len(words)]) if name == "letters" else words
            group.append(Prompt(name, fill(filled, task), options))
        for name, template in CHANNEL_POOL.items():
            prefixes = tuple(template.replace("{label}", _describe(lab))
                             .replace("{word}", lab.word)
                             .replace("{description}", lab.description or lab.word)
                             .replace("..", ".") for lab in task.labels)
            group.append(Prompt(name, prefixes[0] + TEXT_PLACEHOLDER, words, kind="channel",
                                prefixes=prefixes))
        if len(task.labels) == 2:  # p(yes) is the first label's probability
            first = _describe(task.labels[0])
            group.append(Prompt("yes-no", fill(BINARY_YES_NO.replace("{first}", first), task),
                                YES_NO))
        return [group + user]
    groups = []
    for lab, default in zip(task.labels, default_prompts(task), strict=True):
        desc = f" ({lab.description})" if lab.description else ""
        group = [default]
        for name, template in MULTI_POOL.items():
            filled = template.replace("{word}", lab.word).replace("{description}", desc)
            group.append(Prompt(f"{name}:{lab.name}", fill(filled, task), YES_NO, lab.name))
        groups.append(group + [p for p in user if p.label == lab.name])
    return groups


def few_shot(prompt: Prompt, demos: list[tuple[str, int]]) -> Prompt:
    """The same question preceded by solved examples (text, option index)."""
    shots = "".join(f"Message: {text}\nAnswer: {prompt.options[k]}\n\n" for text, k in demos)
    template = f"Here are some solved examples.\n\n{shots}Now the real question.\n\n" \
               f"{prompt.template}"
    return Prompt(f"{prompt.name}+{len(demos)}shot", template, prompt.options, prompt.label)
