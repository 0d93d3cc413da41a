"""The two programs an export ships (as `run.py` and as the first example of its README).

Each reads texts from standard input, one per line (`\\n` or `\\r\\n` ends a line, as in
Tailor's own readers), and prints one JSON line per text, shaped as /classify shapes a result
(app/serving/service.py `_result`): `{"label", "scores", "truncated"}`, scores rounded to 6
digits in falling order, `--threshold` / `--top-k` with /classify's rules and bounds
(threshold in [0, 1], top_k >= 1; single-label: `label` is null below the threshold;
multi-label: every label at or above it, 0.5 by default). A line /classify would refuse with
422 `invalid_text` (not UTF-8, a NUL, nothing the tokenizer can read) prints an error line
instead, `{"error": {"code": "invalid_text", "message", "details": {"line", "reason"}}}`, and
the other lines are still answered: one output line per input line, in order.

ONNX_EXAMPLE needs only onnxruntime, tokenizers and numpy; HF_EXAMPLE only transformers and
torch (safetensors, which reads the head, is a dependency of transformers).
"""

from __future__ import annotations

ONNX_EXAMPLE = '''\
"""Classify texts from standard input (one per line) as Tailor's /classify does."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
BATCH = 32
REFUSED = {"not_utf8": "line is not valid UTF-8", "nul": "NUL character is not allowed",
           "empty": "text must not be empty (the tokenizer finds no tokens in it)"}


def read_lines():
    """Standard input's lines (\\n or \\r\\n ends one); a line that is not UTF-8 is None."""
    lines = sys.stdin.buffer.read().split(b"\\n")
    if lines[-1] == b"":
        lines.pop()
    texts = []
    for line in lines:
        try:
            texts.append(line.removesuffix(b"\\r").decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
    return texts


def refusal(number, text, encoding):
    """The error line for a text /classify refuses (422 invalid_text), else None."""
    reason = ("not_utf8" if text is None else "nul" if "\\0" in text
              else "empty" if all(encoding.special_tokens_mask) else None)
    if reason is None:
        return None
    return {"error": {"code": "invalid_text", "message": f"line {number}: {REFUSED[reason]}",
                      "details": {"line": number, "reason": reason}}}


def bounded(low, high, kind):
    """An argparse type refusing what /classify refuses (422): a value outside [low, high]."""
    def parse(value):
        number = kind(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within [{low}, {high}]")
        return number
    return parse


def result(probs, labels, multi_label, threshold, top_k, truncated):
    order = np.argsort(-probs)[: top_k or len(labels)]
    scores = {labels[i]: round(float(probs[i]), 6) for i in order}
    if multi_label:
        cut = 0.5 if threshold is None else threshold
        label = [labels[i] for i in order if probs[i] >= cut]
    else:
        top = int(order[0])
        label = labels[top] if threshold is None or probs[top] >= threshold else None
    return {"label": label, "scores": scores, "truncated": truncated}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=bounded(0.0, 1.0, float))
    parser.add_argument("--top-k", type=bounded(1, float("inf"), int))
    args = parser.parse_args()
    config = json.loads((HERE / "tailor.json").read_text())
    labels, multi_label = config["labels"], config["multi_label"]
    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))  # truncates, pads
    session = ort.InferenceSession(str(HERE / "model.onnx"))
    texts = read_lines()
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        encodings = tokenizer.encode_batch([t if t and "\\0" not in t else "" for t in batch])
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings],
                                           dtype=np.int64)}
        (probs,) = session.run(["probabilities"], feed)
        for i, (text, encoding, p) in enumerate(zip(batch, encodings, probs)):
            out = refusal(start + i + 1, text, encoding) or result(
                p, labels, multi_label, args.threshold, args.top_k, bool(encoding.overflowing))
            print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
'''

HF_EXAMPLE = '''\
"""Classify texts from standard input (one per line) as Tailor's /classify does."""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH = 32
REFUSED = {"not_utf8": "line is not valid UTF-8", "nul": "NUL character is not allowed",
           "empty": "text must not be empty (the tokenizer finds no tokens in it)"}


def read_lines():
    """Standard input's lines (\\n or \\r\\n ends one); a line that is not UTF-8 is None."""
    lines = sys.stdin.buffer.read().split(b"\\n")
    if lines[-1] == b"":
        lines.pop()
    texts = []
    for line in lines:
        try:
            texts.append(line.removesuffix(b"\\r").decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
    return texts


def refusal(number, text, encoding):
    """The error line for a text /classify refuses (422 invalid_text), else None."""
    reason = ("not_utf8" if text is None else "nul" if "\\0" in text
              else "empty" if all(encoding.special_tokens_mask) else None)
    if reason is None:
        return None
    return {"error": {"code": "invalid_text", "message": f"line {number}: {REFUSED[reason]}",
                      "details": {"line": number, "reason": reason}}}


def bounded(low, high, kind):
    """An argparse type refusing what /classify refuses (422): a value outside [low, high]."""
    def parse(value):
        number = kind(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within [{low}, {high}]")
        return number
    return parse


def result(probs, labels, multi_label, threshold, top_k, truncated):
    order = probs.argsort(descending=True)[: top_k or len(labels)].tolist()
    scores = {labels[i]: round(float(probs[i]), 6) for i in order}
    if multi_label:
        cut = 0.5 if threshold is None else threshold
        label = [labels[i] for i in order if probs[i] >= cut]
    else:
        top = order[0]
        label = labels[top] if threshold is None or probs[top] >= threshold else None
    return {"label": label, "scores": scores, "truncated": truncated}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=bounded(0.0, 1.0, float))
    parser.add_argument("--top-k", type=bounded(1, float("inf"), int))
    args = parser.parse_args()
    # Imported once the options are read: a wrong one is refused at once, not after the
    # seconds torch and transformers take to import.
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    torch.set_grad_enabled(False)  # inference only
    config = json.loads((HERE / "tailor.json").read_text())
    labels, multi_label = config["labels"], config["multi_label"]
    tokenizer = AutoTokenizer.from_pretrained(str(HERE / "encoder"))
    encoder = AutoModel.from_pretrained(str(HERE / "encoder")).eval()
    head = load_file(str(HERE / "head.safetensors"))  # weight [labels, hidden], bias [labels]
    texts = read_lines()
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        batch = tokenizer([t if t and "\\0" not in t else "" for t in chunk], padding=True,
                          truncation=True, max_length=config["max_length"],
                          return_tensors="pt")
        mask = batch["attention_mask"]
        states = encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()  # mean pooling over the real tokens
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-6)
        logits = (pooled @ head["weight"].T + head["bias"]) / config["temperature"]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
        for i, (text, encoding, p) in enumerate(zip(chunk, batch.encodings, probs)):
            out = refusal(start + i + 1, text, encoding) or result(
                p, labels, multi_label, args.threshold, args.top_k, bool(encoding.overflowing))
            print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
'''

EXAMPLES = {"onnx": ONNX_EXAMPLE, "hf": HF_EXAMPLE}
