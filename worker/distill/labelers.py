"""Extra labelers that join the teacher's prompts in the label model.

`EmbeddingLabeler` compares each text with the label descriptions in a sentence-embedding
space (the student's base encoder, all-MiniLM-L6-v2 by default). It is cheap, and on crisis
text it separates topics that a 135M teacher confuses; the label model decides how much to
trust it next to the prompts. Its embeddings also serve to retrieve few-shot examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from worker.distill.calibration import softmax
from worker.distill.config import TaskConfig
from worker.distill.sources import ResolvedModel
from worker.distill.student import load_base, mean_pool

EMBED_BATCH = 64
EMBED_MAX_LENGTH = 128


class EmbeddingLabeler:
    """Zero-shot labels from cosine similarity between texts and label descriptions.

    Args:
        base: a sentence-embedding encoder (mean pooling, as sentence-transformers trains it).
        device: where to run it.
    """

    name = "embedding"

    def __init__(self, base: ResolvedModel, device: torch.device) -> None:
        self.encoder, self.tokenizer = load_base(base)
        self.encoder.to(device).eval()
        self.device = device
        self.id = f"embedding:{base.uri}@{base.sha256[:16]}"

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence embeddings [N, H]."""
        out = []
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), EMBED_BATCH):
            idx = order[start:start + EMBED_BATCH]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=EMBED_MAX_LENGTH, return_tensors="pt").to(self.device)
            states = self.encoder(**enc).last_hidden_state
            pooled = torch.nn.functional.normalize(mean_pool(states, enc["attention_mask"]), dim=-1)
            out.append((idx, pooled.float().cpu().numpy()))
        result = np.zeros((len(texts), out[0][1].shape[1]), dtype=np.float32)
        for idx, vectors in out:
            result[idx] = vectors
        return result

    def label(self, task: TaskConfig, embeddings: np.ndarray, n_reference: int) -> np.ndarray:
        """Probabilities [N, L] from similarities, standardised per label on the first
        `n_reference` rows (the corpus) so that no label wins by its wording alone."""
        prototypes = self.embed([f"{lab.word}: {lab.description}".strip(": ")
                                 for lab in task.labels])
        sims = embeddings @ prototypes.T  # [N, L]
        ref = sims[: max(1, n_reference)]
        return softmax((sims - ref.mean(0)) / (ref.std(0) + 1e-6))


# The extra labelers by name: the names a job spec's `teacher.extra_labelers` may list.
LABELERS: dict[str, type[EmbeddingLabeler]] = {EmbeddingLabeler.name: EmbeddingLabeler}
