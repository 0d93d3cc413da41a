"""Checks that tell, before any heavy work, whether a run can succeed at all.

The API runs them at submission (so a doomed job is a 422, not a failure minutes later) and
the engine runs the same functions as its first step (for models that were not on disk when
the job was submitted). Nothing here loads model weights or imports torch: a tokenizer is
enough to know whether the teacher can tell the answers apart.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from worker.distill.config import TaskConfig
from worker.distill.prompts import default_prompts, user_prompts
from worker.distill.sources import ModelSourceError, ResolvedModel, loading

# Below this many distinct texts there is nothing to split into training and held-out texts:
# the split keeps max(1, round(n * holdout_fraction)) held out, holdout_fraction < 0.5, so 4
# texts leave at least 2 to train on.
MIN_CORPUS = 4
# Tokenizers kept loaded: a teacher and a student per model in use; a GGUF teacher's costs
# about 3 s to build, a folder's a few ms.
TOKENIZER_CACHE_SIZE = 8
# Fast tokenizers are not safe to call from two threads at once (Rust "Already borrowed").
TOKENIZER_LOCK = threading.Lock()


class CheckError(Exception):
    """A run that cannot succeed.

    Args:
        field: the dotted path of the culprit in a job request ("task.labels[1]").
        code: stable for API clients ("verbalizer_collision", "corpus_too_small", ...).
        message: what is wrong and what to do, naming the item (label, row).
    """

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = code
        self.message = message


# ---------------------------------------------------------------- the corpus
def clean_corpus(texts: Sequence[str]) -> list[str]:
    """Strip, drop empties and exact duplicates, keep order (what the engine trains on)."""
    seen: set[str] = set()
    out = []
    for text in texts:
        t = text.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def check_corpus(texts: Sequence[str], field: str = "data.dataset_id") -> list[str]:
    """Return the cleaned corpus; raise CheckError("corpus_too_small") when it cannot be
    split into training and held-out texts."""
    corpus = clean_corpus(texts)
    if len(corpus) < MIN_CORPUS:
        raise CheckError(field, "corpus_too_small",
                         f"the corpus has {len(corpus)} distinct non-empty texts after "
                         f"filtering; at least {MIN_CORPUS} are needed to split it into "
                         "training and held-out texts")
    return corpus


# ---------------------------------------------------------------- eval labels
def check_eval_labels(task: TaskConfig, labels: Sequence[Any],
                      field: str = "data.eval_dataset_id",
                      rows: Sequence[int] | None = None) -> None:
    """Refuse gold labels the evaluation cannot score, naming the row.

    Args:
        task: the job's task; single-label rows need exactly one label (a name, or a list of
            one), multi-label rows a name or a list of names (an empty list: none applies).
        labels: one gold label per labeled row (None rows must be left out by the caller).
        rows: the dataset row index of each label (default 0, 1, ...), for the messages.

    Raises CheckError with code "eval_label_invalid" (wrong type, empty, several labels in a
    single-label task) or "eval_label_unknown" (a name that is not a task label).
    """
    names = set(task.label_names)
    for i, gold in enumerate(labels):
        row = rows[i] if rows is not None else i
        where = f"records[{row}]"
        if isinstance(gold, str):
            given = [gold]
        elif isinstance(gold, list) and all(isinstance(x, str) for x in gold):
            given = gold
        else:
            raise CheckError(field, "eval_label_invalid",
                             f"{where}: a label must be a name or a list of names, "
                             f"not {type(gold).__name__}")
        if not task.multi_label and len(given) != 1:
            raise CheckError(field, "eval_label_invalid",
                             f"{where} has {len(given)} labels {given}; a single-label task "
                             "needs exactly one per row")
        for name in given:
            if name not in names:
                raise CheckError(field, "eval_label_unknown",
                                 f"{where} has label {name!r}, which is not a task label "
                                 f"{task.label_names}")


# ---------------------------------------------------------------- tokenizers
def load_tokenizer(model: ResolvedModel, *, field: str, role: str) -> Any:
    """A model's tokenizer (and nothing else) from local files, cached per process by path,
    file and sha256, so a second job on the same model costs nothing.

    Args:
        model: resolved model files (a folder, or a folder plus a GGUF file).
        field: request field to blame ("teacher.model"); role: "teacher" or "student".

    Raises CheckError(f"{role}_unloadable") naming the cause (absent files, a missing
    dependency such as sentencepiece, a malformed config). The tokenizer may be shared:
    use it under `TOKENIZER_LOCK` when threads share it.
    """
    try:
        with loading(model):  # parsers quote the files they read: keep them quiet
            return _cached_tokenizer(str(model.path), model.file, model.sha256)
    except ModelSourceError as exc:
        # The job's submitter sees this message: name the exception type, and the message
        # only of a missing dependency (it quotes no file contents), never a parser's.
        cause = exc.__context__
        hint = f": {_first_line(cause)}" if isinstance(cause, ImportError) else ""
        raise CheckError(field, f"{role}_unloadable",
                         f"the {role} model's tokenizer cannot be loaded "
                         f"({type(cause).__name__}{hint})") from None


@lru_cache(maxsize=TOKENIZER_CACHE_SIZE)
def _cached_tokenizer(path: str, file: str | None, sha256: str) -> Any:
    from transformers import AutoConfig, AutoTokenizer

    if file is None:  # a folder: its config must parse too, or the model never loads
        AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": file} if file else {}))
    if tokenizer is None or not callable(tokenizer):
        raise ValueError("the folder has no usable tokenizer")
    # Without its vocabulary files transformers still builds a tokenizer from the config,
    # holding only special tokens: every text would become [UNK]. Refuse it here.
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise ValueError(f"the tokenizer has no vocabulary beyond its {len(tokenizer)} "
                         "special tokens (vocabulary files missing?)")
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no detail"


# ---------------------------------------------------------------- answer words
def option_token_ids(tokenizer: Any, options: Sequence[str],
                     fields: Sequence[str] | None = None) -> list[list[int]]:
    """Token ids that count as each option: first tokens of its case/space variants.

    Args:
        tokenizer: the teacher's (a transformers tokenizer).
        options: the answer words, e.g. ("flood", "flood over").
        fields: the request field of each option, for errors (default "task.labels").

    Returns one sorted list of token ids per option.
    Raises CheckError("verbalizer_collision") when two options share their first token (the
    teacher could not tell them apart) or ("verbalizer_unexpressible") when an option has no
    token of its own.
    """
    fields = list(fields) if fields is not None else ["task.labels"] * len(options)
    unk = tokenizer.unk_token_id
    firsts: list[int] = []
    variants: list[set[int]] = []
    for k, word in enumerate(options):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if not ids or ids[0] == unk:
            raise CheckError(fields[k], "verbalizer_unexpressible",
                             f"the teacher's vocabulary cannot express the answer {word!r}; "
                             "give the label a 'verbalizer' word it knows")
        firsts.append(ids[0])
        forms = {word, word.capitalize(), word.lower(), " " + word, " " + word.capitalize()}
        toks = set()
        for form in forms:
            enc = tokenizer.encode(form, add_special_tokens=False)
            if enc and enc[0] != unk:
                toks.add(enc[0])
        variants.append(toks)
    for i in range(len(options)):
        for j in range(i + 1, len(options)):
            if firsts[i] == firsts[j]:
                tok = tokenizer.decode([firsts[i]])
                raise CheckError(
                    fields[j], "verbalizer_collision",
                    f"answers {options[i]!r} and {options[j]!r} start with the same token "
                    f"{tok!r} for this teacher; give the labels distinct 'verbalizer' words")
    # A variant token shared by two options would count for both: drop it from both.
    shared = {t for i, a in enumerate(variants) for b in variants[i + 1:] for t in a & b}
    return [sorted((v - shared) | {firsts[i]}) for i, v in enumerate(variants)]


def prefix_collisions(options: Sequence[str], fields: Sequence[str] | None = None) -> None:
    """For a black-box teacher, which answers with one token matched by text
    (worker.distill.teachers.openai_compat.option_scores): a token that begins two options counts
    for neither, so two options whose first words are equal, or one a prefix of the other,
    can never be told apart (we cannot see the server's vocabulary to be more precise).

    Raises CheckError("verbalizer_collision").
    """
    fields = list(fields) if fields is not None else ["task.labels"] * len(options)
    firsts = [(o.strip().lower().split() or [""])[0] for o in options]
    for i, a in enumerate(firsts):
        for j, b in enumerate(firsts):
            if i != j and b.startswith(a):
                raise CheckError(fields[max(i, j)], "verbalizer_collision",
                                 f"answers {options[i]!r} and {options[j]!r} begin alike; a "
                                 "one-token reply could not tell them apart; give the labels "
                                 "distinct 'verbalizer' words")


def required_options(task: TaskConfig, templates: list[str]) -> list[tuple[str, ...]]:
    """The answer-word sets the run cannot do without: the task's default prompt and every
    user prompt must work (the adaptive pool may skip its other candidates)."""
    prompts = default_prompts(task) + user_prompts(task, templates)
    return list(dict.fromkeys(p.options for p in prompts if p.kind == "choice"))


def check_answer_words(task: TaskConfig, templates: list[str], tokenizer: Any | None) -> None:
    """Refuse answers the teacher cannot tell apart: by its tokenizer (white-box), or by
    text prefixes (black-box, `tokenizer` None). Raises CheckError naming the label."""
    words = tuple(lab.word for lab in task.labels)
    with TOKENIZER_LOCK:
        _check_words(task, templates, tokenizer, words)


def _check_words(task: TaskConfig, templates: list[str], tokenizer: Any | None,
                 words: tuple[str, ...]) -> None:
    for options in required_options(task, templates):
        # Name the label whose word is at fault; yes/no answers belong to the teacher.
        fields = ([f"task.labels[{k}]" for k in range(len(options))] if options == words
                  else ["teacher.model"] * len(options))
        if tokenizer is None:
            prefix_collisions(options, fields)
        else:
            option_token_ids(tokenizer, options, fields)
