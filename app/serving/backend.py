"""TAILOR_SERVING_BACKEND: which path serves versions (torch, onnx or auto), wired to the
registry (held-out texts in, precision and agreement out)."""

from __future__ import annotations

from app.core.config import Settings
from app.core.db import session_scope
from app.registry.service import record_serving
from app.serving.compiled import CompiledRecord, Compiler, Decision
from app.serving.holdout import heldout_texts


def record(name: str, version: int, compiled: CompiledRecord, decision: Decision) -> None:
    """Store the precision `name:version` serves with and its measured int8 agreement."""
    with session_scope() as db:
        record_serving(db=db, name=name, version=version, precision=decision.precision,
                       agreement=compiled.agreement,
                       texts=compiled.texts if compiled.agreement is not None else None)


def make_compiler(settings: Settings) -> Compiler | None:
    """The compiler for the onnx and auto backends; None for torch."""
    if settings.serving_backend == "torch":
        return None
    return Compiler(settings.serving_backend, models_dir=settings.cache / "models",
                    threads=settings.serving_threads, heldout=heldout_texts, record=record,
                    min_agreement=settings.serving_int8_min_agreement,
                    min_texts=settings.serving_int8_min_texts,
                    max_texts=settings.serving_agreement_max_texts)
