"""A local causal LM loaded for scoring, and the plumbing every white-box scorer shares.

Question prompts (worker/distill/teachers/hf.py) and channel prompts
(worker/distill/teachers/channel.py) both run the decoder stack over right-padded batches
that continue a shared, once-encoded prefix; the pieces they share are public here.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from worker.distill.sources import ResolvedModel, converted, loading

log = logging.getLogger(__name__)

# A prefix's KV cache: per layer (keys, values) of shape [1, heads, P, head_dim], and P.
PrefixCache = tuple[list[tuple[torch.Tensor, ...]], int]
Precision = Literal["float32", "bfloat16"]
PRECISIONS = ("auto", "float32", "bfloat16")


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve 'auto' to CUDA when present, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: CUDA, or a CPU with AVX512-BF16 or
    AMX (what PyTorch's own CPU kernels check; without them bfloat16 is emulated, slower
    than float32)."""
    if device.type == "cuda":
        return True
    cpu = torch.cpu
    return device.type == "cpu" and any(
        bool(getattr(cpu, probe, lambda: False)())
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision a teacher runs in: "auto" is bfloat16 where `device` runs it natively
    (`native_bf16`), else float32; "float32" and "bfloat16" are taken as they are.

    Raises:
        ValueError: `requested` is not one of PRECISIONS.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"teacher precision must be one of {PRECISIONS}, not {requested!r}")
    if requested == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return "bfloat16" if requested == "bfloat16" else "float32"


def gguf_to_folder(model: ResolvedModel) -> Callable[[Path], None]:
    """A `build` for worker.distill.sources.converted: the GGUF model and its tokenizer
    as transformers reads them (weights dequantized to float32), saved as a folder
    (config.json, model.safetensors, tokenizer files), which loads without the GGUF path."""
    def build(out: Path) -> None:
        kwargs = {"gguf_file": model.file}
        tokenizer = AutoTokenizer.from_pretrained(str(model.path), **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(model.path), dtype=torch.float32,
                                                  **kwargs)
        # The GGUF quantizer only dequantized the weights on the way in: what is left is a
        # plain float32 model, which transformers refuses to save while the quantizer is set.
        lm.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute at runtime
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return build


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every linear layer (attention, MLP and the LM head) replaced by its
    dynamically quantized int8 version: weights int8 per tensor, activations quantized per
    batch at run time, accumulation in int32 (PyTorch's `quantize_dynamic`, the method of
    Jacob et al., 2018 as applied to transformers by Zafrir et al., 2019). CPU only.
    Embeddings and norms stay float32."""
    with warnings.catch_warnings():  # torch announces a move of these APIs to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                      dtype=torch.qint8)


class CausalLM:
    """A Hugging Face causal LM (a directory, or a directory plus a GGUF file) in eval mode.

    Args:
        model: resolved model files (a HF directory, or a directory plus a GGUF file name).
        device: where to run.
        precision: "float32", "bfloat16" or "auto" (`resolve_precision`). bfloat16 on CUDA
            keeps the weights in bfloat16; on CPU it keeps them in float32 and runs the
            forward passes under `torch.autocast` (matrix products in bfloat16; norms,
            softmax and the residual stream in float32: PyTorch's mixed-precision op
            lists). Measured on the CPU by bench/teacher.py: 2.7x the float32 teacher's
            texts/s at 98.7% agreement with its decisions (bench/results/teacher.md).
        convert_cache: the model cache; when given, a GGUF model is converted to a
            transformers folder there once (checksummed, worker.distill.sources.converted)
            and every later load reads that folder: 0.5-1.5 s instead of 14-37 s.
        quantize: "int8" (dynamic int8 linear layers, `quantize_int8`; CPU only) or "none".
            Measured by bench/teacher.py, not a job setting: its decisions agree with the
            float32 teacher's too rarely (bench/results/teacher.md).

    Raises:
        ModelSourceError: `teacher_unloadable` when the files do not parse as a causal LM.
    """

    def __init__(self, model: ResolvedModel, device: torch.device | str = "auto", *,
                 precision: str = "float32", convert_cache: Path | None = None,
                 quantize: str = "none") -> None:
        self.source = model
        self.device = pick_device(str(device))
        self.quantized = quantize == "int8"
        self.precision: Precision = resolve_precision(precision, self.device)
        if self.quantized and self.precision != "float32":
            raise ValueError("int8 dynamic quantization runs on a float32 teacher only")
        on_gpu_bf16 = self.device.type == "cuda" and self.precision == "bfloat16"
        dtype = torch.bfloat16 if on_gpu_bf16 else torch.float32
        # a parse error names the source, never the file's contents
        with loading(model, code="teacher_unloadable"):
            folder, kwargs = model.path, {"gguf_file": model.file} if model.file else {}
            if model.file and convert_cache is not None:
                try:
                    folder = converted(model, convert_cache,
                                       f"gguf-transformers-{transformers.__version__}",
                                       gguf_to_folder(model))
                    kwargs = {}
                except OSError as exc:  # a full or read-only cache: the slow path still works
                    log.warning("teacher %s not converted into %s (%s): reading the GGUF",
                                model.uri, convert_cache, type(exc).__name__)
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype,
                                                              **kwargs)
        self.model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' .to stub
        self.total_params = sum(p.numel() for p in self.model.parameters())
        if self.quantized:
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on CPU only")
            self.model = quantize_int8(self.model)  # type: ignore[assignment]  # same model, int8 linears
        self.body = self.model.base_model  # the decoder stack, without the LM head
        self.head = self.model.get_output_embeddings()
        self.hidden_size = int(self.model.config.hidden_size)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The context every forward pass runs in: bfloat16 autocast for a bfloat16 teacher
        on CPU (its weights stay float32), nothing otherwise (a CUDA bfloat16 teacher holds
        bfloat16 weights already)."""
        if self.precision == "bfloat16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wants_bos(self, rendered: str) -> bool:
        """Whether a sequence that starts with `rendered` needs the BOS token put in front:
        the tokenizer adds one to plain text and `rendered` does not begin with it already."""
        bos = self.tokenizer.bos_token
        if bos is None or self.tokenizer.bos_token_id is None or rendered.startswith(bos):
            return False
        probe = self.tokenizer("x").input_ids
        return bool(probe) and probe[0] == self.tokenizer.bos_token_id

    def encode_prefix(self, prefix_ids: list[int]) -> tuple[PrefixCache, torch.Tensor]:
        """KV cache of a shared prefix, and the log-probs [V] of the token that follows it."""
        ids = torch.tensor([prefix_ids], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.body(input_ids=ids, cache=cache, use_cache=True)
        # Attention layers only: every layer of these decoders keeps keys and values.
        layers = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr]
        next_lp = torch.log_softmax(self.head(out.last_hidden_state[0, -1:])[0].float(), dim=-1)
        return (layers, len(prefix_ids)), next_lp  # type: ignore[return-value]

    def expanded_cache(self, prefix: PrefixCache, batch: int) -> DynamicCache:
        """A batch-sized cache that starts from a shared prefix (the prefix is not copied)."""
        layers, _ = prefix
        return DynamicCache(
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers],
            config=self.model.config)

    def pad_batch(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids [B, W] and attention mask [B, W] on the model's device."""
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)
