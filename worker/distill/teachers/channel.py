"""Noisy-channel scoring: how likely is the text after each label's prefix?

Small causal LMs are poor at answering "which category is this?" but fair at modelling text:
log p(text | "A news report about a disaster:") vs log p(text | "A news report about sport:")
ranks texts far better than their next-token answers (Min et al., 2022, "Noisy Channel
Language Model Prompting"). Each label's prefix is encoded once and its KV cache reused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from worker.distill.prompts import Prompt
from worker.distill.teachers.base import TeacherScores
from worker.distill.teachers.causal_lm import CausalLM


@torch.inference_mode()
def score_channel(teacher: CausalLM, prompt: Prompt, texts: Sequence[str], *,
                  batch_size: int, max_text_tokens: int, want_hidden: bool,
                  on_batch: Callable[[int], None] | None = None) -> TeacherScores:
    """Per text and label: the summed log-probability of the text's tokens after the label's
    prefix ([N, L]); hidden states are pooled over the text under the first prefix.
    `on_batch(n)` after each batch of n texts, and `on_batch(0)` after each label of it."""
    tok = teacher.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None and teacher.wants_bos("") else []
    prefixes = [teacher.encode_prefix(bos + tok.encode(p, add_special_tokens=False))
                for p in prompt.prefixes]
    bodies = [tok.encode(t, add_special_tokens=False)[:max_text_tokens] or
              ([tok.eos_token_id] if tok.eos_token_id is not None else [0]) for t in texts]
    order = np.argsort([len(b) for b in bodies], kind="stable")
    scores = np.zeros((len(texts), len(prefixes)), dtype=np.float32)
    hidden = np.zeros((len(texts), teacher.hidden_size), dtype=np.float32) if want_hidden else None
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        seqs = [bodies[i] for i in idx]
        ids, mask = teacher.pad_batch(seqs)
        for col, (prefix, first_lp) in enumerate(prefixes):
            offset = prefix[1]
            full_mask = torch.cat([torch.ones((len(idx), offset), dtype=mask.dtype,
                                              device=mask.device), mask], dim=1)
            positions = torch.arange(offset, offset + ids.shape[1],
                                     device=ids.device).expand(len(idx), -1)
            out = teacher.body(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                               cache=teacher.expanded_cache(prefix, len(idx)), use_cache=True)
            states = out.last_hidden_state
            # Token t is predicted by position t-1; the first by the prefix's last position.
            logits = teacher.head(states[:, :-1]).float()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            valid = mask[:, 1:].to(lp.dtype)
            total = (lp * valid).sum(1) + first_lp[ids[:, 0]]
            scores[idx, col] = total.cpu().numpy()
            if hidden is not None and col == 0:
                w = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * w).sum(1) / w.sum(1).clamp(min=1)
                hidden[idx] = pooled.float().cpu().numpy()
            if on_batch and col + 1 < len(prefixes):
                # A tick (0 texts) per label: one batch under many labels can take minutes
                # on a CPU, and a shard's lease is kept only while its teacher makes progress.
                on_batch(0)
        if on_batch:
            on_batch(len(idx))
    return TeacherScores(scores, hidden)
