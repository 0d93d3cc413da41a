"""The two programs an export ships (as `run.py` and as the first example of its README).

Each reads texts from standard input, one per line (`\\n` or `\\r\\n` ends a line, as in
Tailor's own readers), and prints one JSON line per text, shaped as /classify shapes a result
(app/serving/service.py `_result`): `{"label", "scores", "truncated"}`, scores rounded to 6
digits in falling order, `--threshold` / `--top-k` with /classify's rules (single-label:
`label` is null below the threshold; multi-label: every label at or above it, 0.5 by
default). A text in which the tokenizer finds nothing to read prints an `invalid_text` error
line instead, as /classify answers 422 for it.

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
EMPTY = {"error": {"code": "invalid_text", "message": "text must not be empty"}}


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
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--top-k", type=int)
    args = parser.parse_args()
    config = json.loads((HERE / "tailor.json").read_text())
    labels, multi_label = config["labels"], config["multi_label"]
    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))  # truncates, pads
    session = ort.InferenceSession(str(HERE / "model.onnx"))
    lines = sys.stdin.buffer.read().decode("utf-8").split("\\n")
    texts = [line.removesuffix("\\r") for line in lines[: -1 if lines[-1] == "" else None]]
    for start in range(0, len(texts), BATCH):
        encodings = tokenizer.encode_batch(texts[start:start + BATCH])
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings],
                                           dtype=np.int64)}
        (probs,) = session.run(["probabilities"], feed)
        for encoding, p in zip(encodings, probs):
            out = EMPTY if all(encoding.special_tokens_mask) else result(
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

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

HERE = Path(__file__).resolve().parent
BATCH = 32
EMPTY = {"error": {"code": "invalid_text", "message": "text must not be empty"}}


def result(probs, labels, multi_label, threshold, top_k, truncated):
    order = torch.argsort(probs, descending=True)[: top_k or len(labels)].tolist()
    scores = {labels[i]: round(float(probs[i]), 6) for i in order}
    if multi_label:
        cut = 0.5 if threshold is None else threshold
        label = [labels[i] for i in order if probs[i] >= cut]
    else:
        top = order[0]
        label = labels[top] if threshold is None or probs[top] >= threshold else None
    return {"label": label, "scores": scores, "truncated": truncated}


@torch.inference_mode()
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--top-k", type=int)
    args = parser.parse_args()
    config = json.loads((HERE / "tailor.json").read_text())
    labels, multi_label = config["labels"], config["multi_label"]
    tokenizer = AutoTokenizer.from_pretrained(str(HERE / "encoder"))
    encoder = AutoModel.from_pretrained(str(HERE / "encoder")).eval()
    head = load_file(str(HERE / "head.safetensors"))  # weight [labels, hidden], bias [labels]
    lines = sys.stdin.buffer.read().decode("utf-8").split("\\n")
    texts = [line.removesuffix("\\r") for line in lines[: -1 if lines[-1] == "" else None]]
    for start in range(0, len(texts), BATCH):
        batch = tokenizer(texts[start:start + BATCH], padding=True, truncation=True,
                          max_length=config["max_length"], return_tensors="pt")
        mask = batch["attention_mask"]
        states = encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()  # mean pooling over the real tokens
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-6)
        logits = (pooled @ head["weight"].T + head["bias"]) / config["temperature"]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
        for encoding, p in zip(batch.encodings, probs):
            out = EMPTY if all(encoding.special_tokens_mask) else result(
                p, labels, multi_label, args.threshold, args.top_k, bool(encoding.overflowing))
            print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
'''

EXAMPLES = {"onnx": ONNX_EXAMPLE, "hf": HF_EXAMPLE}
