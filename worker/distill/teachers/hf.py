"""White-box teacher: a Hugging Face causal LM (GGUF too) scored by next-token log-probs.

For each text and prompt the teacher returns the log-probability of each option word as the
next token after the prompt, plus a pooled hidden state. The prompt prefix before `{text}` is
the same for every text, so it is encoded once and its KV cache reused by every batch.
Channel prompts are scored by worker/distill/teachers/channel.py on the same model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from worker.distill.checks import CheckError, option_token_ids
from worker.distill.prompts import Prompt
from worker.distill.sources import ResolvedModel
from worker.distill.teachers.base import TeacherError, TeacherScores
from worker.distill.teachers.causal_lm import CausalLM, PrefixCache
from worker.distill.teachers.channel import score_channel

log = logging.getLogger(__name__)
SENTINEL = "\x00TEXT\x00"


class HFTeacher(CausalLM):
    """A local causal LM used as a white-box teacher.

    Args:
        model: resolved model files (a HF directory, or a directory plus a GGUF file name).
        device: where to run.
        precision: "float32", "bfloat16" or "auto" (CausalLM; measured by bench/teacher.py).
        convert_cache: the model cache, where a GGUF model is converted once (CausalLM).
        quantize: "none" or "int8" (CausalLM; measured by bench/teacher.py).
    """

    def __init__(self, model: ResolvedModel, device: torch.device | str = "auto", *,
                 precision: str = "float32", convert_cache: Path | None = None,
                 quantize: str = "none") -> None:
        super().__init__(model, device, precision=precision, convert_cache=convert_cache,
                         quantize=quantize)
        self._option_cache: dict[tuple[str, ...], list[list[int]]] = {}

    @property
    def id(self) -> str:
        """Stable identity for caching: the URI plus the checksum of its files, and `+int8`
        when quantized or `+bf16` in bfloat16 (their scores differ slightly, so they are
        cached apart)."""
        variant = "+int8" if self.quantized else "+bf16" if self.precision == "bfloat16" else ""
        return f"{self.source.uri}@{self.source.sha256[:16]}{variant}"

    # ---------------------------------------------------------------- prompt plumbing
    def split_prompt(self, prompt: Prompt) -> tuple[list[int], str, list[int]]:
        """Return (prefix token ids, text lead, suffix token ids) for a prompt."""
        user = prompt.render(SENTINEL)
        if getattr(self.tokenizer, "chat_template", None):
            full = str(self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True))
        else:
            full = user + "\nAnswer:"
        prefix, suffix = full.split(SENTINEL)
        lead = ""
        # Byte-level BPE attaches a space to the following word: move it onto the text.
        if prefix.endswith(" "):
            prefix, lead = prefix[:-1], " "
        bos = [self.tokenizer.bos_token_id] if self.wants_bos(full) else []
        prefix_ids = bos + self.tokenizer.encode(prefix, add_special_tokens=False)
        suffix_ids = self.tokenizer.encode(suffix, add_special_tokens=False)
        return prefix_ids, lead, suffix_ids

    def option_ids(self, options: Sequence[str]) -> list[list[int]]:
        """Token ids that count as each option: first tokens of its case/space variants.

        Raises TeacherError when two options share their first token (the teacher could
        not tell them apart) or an option has no token of its own (the same rule the API
        applies at submission: worker.distill.checks.option_token_ids).
        """
        key = tuple(options)
        if key not in self._option_cache:
            try:
                self._option_cache[key] = option_token_ids(self.tokenizer, options)
            except CheckError as exc:
                raise TeacherError(exc.code, exc.message) from exc
        return self._option_cache[key]

    # ---------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(self, prompt: Prompt, texts: Sequence[str], *, batch_size: int = 16,
              max_text_tokens: int = 256, prefix_cache: bool = True, want_hidden: bool = True,
              on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Score `texts` under `prompt`; `on_batch(n)` is called after each batch of n texts."""
        with self.autocast():  # bfloat16 on CPU: see CausalLM
            if prompt.kind == "channel":
                return score_channel(self, prompt, texts, batch_size=batch_size,
                                     max_text_tokens=max_text_tokens, want_hidden=want_hidden,
                                     on_batch=on_batch)
            option_ids = self.option_ids(prompt.options)
            prefix_ids, lead, suffix_ids = self.split_prompt(prompt)
            bodies = [self.tokenizer.encode(lead + t, add_special_tokens=False)[:max_text_tokens]
                      for t in texts]
            order = np.argsort([len(b) for b in bodies], kind="stable")  # length-sorted batches
            prefix_kv = self.encode_prefix(prefix_ids)[0] if prefix_cache else None
            logprobs = np.zeros((len(texts), len(option_ids)), dtype=np.float32)
            hidden = (np.zeros((len(texts), self.hidden_size), dtype=np.float32)
                      if want_hidden else None)
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                seqs = [bodies[i] + suffix_ids for i in idx]
                if prefix_kv is None:
                    lp, hid = self._forward([prefix_ids + s for s in seqs],
                                            [len(prefix_ids)] * len(seqs), None, option_ids)
                else:
                    lp, hid = self._forward(seqs, [0] * len(seqs), prefix_kv, option_ids)
                logprobs[idx] = lp
                if hidden is not None:
                    hidden[idx] = hid
                if on_batch:
                    on_batch(len(idx))
            return TeacherScores(logprobs, hidden)

    def score_each(self, prompts: Sequence[Prompt], texts: Sequence[str], *,
                   batch_size: int = 8, max_text_tokens: int = 256,
                   on_batch: Callable[[int], None] | None = None) -> TeacherScores:
        """Score text i under prompts[i] (e.g. few-shot prompts with per-text examples).

        Prefixes differ, so there is no shared KV cache: each row is a full sequence. All
        prompts must offer the same options.
        """
        option_ids = self.option_ids(prompts[0].options)
        rows, skips = [], []
        for prompt, text in zip(prompts, texts, strict=True):
            prefix_ids, lead, suffix_ids = self.split_prompt(prompt)
            body = self.tokenizer.encode(lead + text, add_special_tokens=False)[:max_text_tokens]
            rows.append(prefix_ids + body + suffix_ids)
            skips.append(len(prefix_ids))
        order = np.argsort([len(r) for r in rows], kind="stable")
        logprobs = np.zeros((len(rows), len(option_ids)), dtype=np.float32)
        hidden = np.zeros((len(rows), self.hidden_size), dtype=np.float32)
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(rows), batch_size):
                idx = order[start:start + batch_size]
                lp, hid = self._forward([rows[i] for i in idx], [skips[i] for i in idx], None,
                                        option_ids)
                logprobs[idx], hidden[idx] = lp, hid
                if on_batch:
                    on_batch(len(idx))
        return TeacherScores(logprobs, hidden)

    def _forward(self, seqs: list[list[int]], skips: list[int],
                 prefix: PrefixCache | None,
                 option_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Run one right-padded batch; pool hidden states over each row's positions from its
        skip on (the text and what follows it, not the shared instructions)."""
        batch, width = len(seqs), max(len(s) for s in seqs)
        ids, mask = self.pad_batch(seqs)
        kwargs: dict[str, object] = {}
        offset = 0
        if prefix is not None:
            offset = prefix[1]
            kwargs["cache"] = self.expanded_cache(prefix, batch)
            mask = torch.cat([torch.ones((batch, offset), dtype=mask.dtype,
                                         device=self.device), mask], dim=1)
        positions = torch.arange(offset, offset + width, device=self.device).expand(batch, -1)
        out = self.body(input_ids=ids, attention_mask=mask, position_ids=positions,
                        use_cache=prefix is not None, **kwargs)
        states = out.last_hidden_state  # [B, width, H]
        lengths = torch.tensor([len(s) for s in seqs], device=self.device)
        last = states[torch.arange(batch, device=self.device), lengths - 1]
        token_lp = torch.log_softmax(self.head(last).float(), dim=-1)
        option_lp = torch.stack(
            [torch.logsumexp(token_lp[:, ids_], dim=-1) for ids_ in option_ids], dim=-1)
        keep = torch.arange(width, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)
        keep &= torch.arange(width, device=self.device).unsqueeze(0) >= torch.tensor(
            skips, device=self.device).unsqueeze(1)
        weights = keep.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return option_lp.cpu().numpy(), pooled.float().cpu().numpy()

    def latency_ms(self, prompt: Prompt, texts: Sequence[str], batch_size: int = 32) -> float:
        """Wall milliseconds per text for one uncached batch (what serving the teacher costs)."""
        sample = list(texts[:batch_size])
        started = time.perf_counter()
        self.score(prompt, sample, batch_size=batch_size, want_hidden=False)
        return 1000 * (time.perf_counter() - started) / max(1, len(sample))
