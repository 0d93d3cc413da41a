"""TAILOR_SERVING_BACKEND: which path serves versions (torch, onnx or auto), wired to the
registry (held-out texts in, precision and agreement out) and to the export cache (the fp32
graph a compiled version runs is its cached ONNX export's `model.onnx`)."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.registry.service import get_version, record_serving
from app.serving.compiled import CompiledRecord, Compiler, Decision
from app.serving.exports import ExportSource, open_export
from app.serving.holdout import heldout_texts

GRAPH_MEMBER = "model.onnx"  # the graph inside an ONNX export archive's one folder


def exported_graph(key: str, artifact_dir: Path, out: Path) -> None:
    """Write the `model.onnx` of version `key`'s cached ONNX export (built now if missing)
    to `out`, atomically.

    Raises:
        Conflict: `not_exportable` (the export's own refusal); ValueError: an archive
            without the graph.
    """
    name, version = key.rsplit(":", 1)
    with session_scope() as db:
        source = ExportSource.of(get_version(db=db, name=name, version=int(version)))
    settings = get_settings()
    export = open_export(source, "onnx", artifacts_root=settings.artifacts,
                         models_dir=settings.cache / "models")
    tmp = out.with_name(out.name + ".tmp")
    with export.handle, tarfile.open(fileobj=export.handle, mode="r:gz") as archive:
        member = next((m for m in archive.getmembers() if m.isfile()
                       and Path(m.name).name == GRAPH_MEMBER), None)
        graph = archive.extractfile(member) if member is not None else None
        if graph is None:
            raise ValueError(f"the ONNX export of {key} holds no {GRAPH_MEMBER}")
        with graph, open(tmp, "wb") as fh:
            shutil.copyfileobj(graph, fh)
    os.replace(tmp, out)


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
    return Compiler(settings.serving_backend, fp32_graph=exported_graph,
                    threads=settings.serving_threads, heldout=heldout_texts, record=record,
                    min_agreement=settings.serving_int8_min_agreement,
                    min_texts=settings.serving_int8_min_texts,
                    max_texts=settings.serving_agreement_max_texts)
