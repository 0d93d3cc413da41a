"""GPU checks: the CUDA path with the teacher in bfloat16, the student's LoRA training and serving.

The device machine has no network and at most 64 MiB travels to it, so the real weights do
not: the models are built from their configs with random weights (same architecture, same
shapes, so the same arithmetic and memory traffic). Texts are token ids of tweet lengths.

Measures, each after a warm-up and with `torch.cuda.synchronize()` around the timed part:
  1. teacher (SmolLM2-135M architecture, LlamaForCausalLM) forward texts/s in bfloat16 and
     float32 at batch 32 over a prompt prefix + text (the engine's scoring pass: one forward
     per text, the next-token distribution read at the last position);
  2. student (MiniLM-L6 architecture, BertModel + peft LoRA r=8 on query/value + a linear
     head) training steps/s at batch 32, and serving texts/s (mean pooling + head) in float32
     and bfloat16 at batch 32.

Usage: `python bench/gpu.py` (needs CUDA; writes bench/results/gpu.{json,md}), or
`python bench/gpu.py --device cpu --tiny --out DIR` to check the script itself anywhere
(tiny configs, a few steps; the unit test does this so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]

# SmolLM2-135M-Instruct (the offline teacher of DESIGN.md section 6), from its config.json.
TEACHER = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
               max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
               rms_norm_eps=1e-5)
# all-MiniLM-L6-v2 (the offline student base), from its config.json.
STUDENT = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
               num_attention_heads=12, vocab_size=30522, max_position_embeddings=512)
TINY_TEACHER = dict(TEACHER, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
TINY_STUDENT = dict(STUDENT, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, vocab_size=1000)
PROMPT_TOKENS, TEXT_TOKENS = 96, 40  # a prompt with label descriptions; a tweet
STUDENT_TOKENS, BATCH, LABELS = 48, 32, 6


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call of `fn`, after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def teacher_rates(device: torch.device, dims: dict[str, Any], repeats: int) -> dict[str, float]:
    """Teacher forward texts/s at batch BATCH per dtype (bfloat16 only where supported)."""
    out = {}
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda"
                                and torch.cuda.is_bf16_supported() else [])
    ids = torch.randint(0, dims["vocab_size"], (BATCH, PROMPT_TOKENS + TEXT_TOKENS),
                        device=device)
    for dtype in dtypes:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**dims)).to(device=device, dtype=dtype).eval()

        def forward(model: LlamaForCausalLM = model) -> None:
            with torch.inference_mode():
                logits = model(input_ids=ids, logits_to_keep=1).logits
                logits[:, -1].float().log_softmax(-1)

        out[str(dtype).removeprefix("torch.")] = round(BATCH / timed(forward, device, repeats), 1)
        del model, forward
    return out


def _student(dims: dict[str, Any], device: torch.device) -> tuple[Any, torch.nn.Linear]:
    torch.manual_seed(0)
    encoder = get_peft_model(BertModel(BertConfig(**dims), add_pooling_layer=False),
                             LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    return encoder.to(device), torch.nn.Linear(dims["hidden_size"], LABELS).to(device)


def student_rates(device: torch.device, dims: dict[str, Any], repeats: int) -> dict[str, float]:
    """LoRA training steps/s and serving texts/s (float32, and bfloat16 autocast on CUDA)."""
    encoder, head = _student(dims, device)
    ids = torch.randint(0, dims["vocab_size"], (BATCH, STUDENT_TOKENS), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, LABELS, (BATCH,), device=device)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def pooled() -> torch.Tensor:
        states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(head(pooled()), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    encoder.train()
    out = {"train_steps_per_s": round(1 / timed(step, device, repeats), 2)}
    encoder.eval()

    def serve() -> None:
        with torch.inference_mode():
            head(pooled()).softmax(-1)

    out["serve_float32_texts_per_s"] = round(BATCH / timed(serve, device, repeats), 1)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        def serve_bf16() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                serve()

        out["serve_bfloat16_texts_per_s"] = round(BATCH / timed(serve_bf16, device, repeats), 1)
    return out


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    t, s = results["teacher_texts_per_s"], results["student"]
    lines = ["# GPU checks", "", f"Command: `{results['command']}`  ",
             f"Machine: {results['machine']}  ",
             "Models: same architectures as the offline teacher (SmolLM2-135M) and student "
             "(MiniLM-L6 + LoRA r=8), built from their configs with random weights (no weights "
             "travel to the device machine). Batch 32; teacher texts are "
             f"{PROMPT_TOKENS}+{TEXT_TOKENS} tokens, student texts {STUDENT_TOKENS}.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| teacher forward, {dtype} | {rate} texts/s |" for dtype, rate in t.items()]
    lines += [f"| student LoRA training | {s['train_steps_per_s']} steps/s |",
              f"| student serving, float32 | {s['serve_float32_texts_per_s']} texts/s |"]
    if "serve_bfloat16_texts_per_s" in s:
        lines.append(f"| student serving, bfloat16 | {s['serve_bfloat16_texts_per_s']} texts/s |")
    (out / "gpu.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: checks the script")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or pass --device cpu --tiny")
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.machine()} CPU")
    results = {
        "command": "python bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{name}, torch {torch.__version__}",
        "teacher_texts_per_s": teacher_rates(device, TINY_TEACHER if args.tiny else TEACHER,
                                             args.repeats),
        "student": student_rates(device, TINY_STUDENT if args.tiny else STUDENT, args.repeats),
    }
    write(results, args.out)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
