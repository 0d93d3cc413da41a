"""Exports of registered versions: built once, cached beside the version's artifacts with their
sha256, verified each time they are served again, rebuilt when missing or corrupt.

The cache of a version lives in `<artifact folder>/exports/`: `<format>.json` (the manifest:
archive file name, sha256, size) and the archive it names. A build writes a new uniquely
named archive, then replaces the manifest atomically, so a reader never pairs a manifest with
a half-written archive; an exclusive lock per format (`<format>.lock`, flock: it holds across
threads and processes sharing the store) makes concurrent requests build once and the others
find the cache. Deleting a version removes its folder, exports included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from app.core.errors import Conflict, Overloaded, Unavailable
from app.models import ModelVersion
from worker.distill.export_package import (
    FORMATS,
    VersionInfo,
    package_name,
    write_archive,
    write_package,
)
from worker.distill.sources import ModelSourceError
from worker.distill.student import ArtifactError

log = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
MEDIA_TYPE = "application/gzip"
CHUNK = 1 << 20  # bytes read per step while hashing and streaming
# The download name a manifest may give (it goes into Content-Disposition): a model name
# (app/jobs/schemas.py NAME_PATTERN), -vN-FORMAT, .tar.gz; nothing that could break a header.
DOWNLOAD_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*\.tar\.gz")
# Builds at once per process: one takes the CPU for seconds (export, gzip) and holds a second
# copy of the base encoder; /classify shares both. Others wait, then usually hit the cache.
MAX_CONCURRENT_BUILDS = 1
_builds = threading.BoundedSemaphore(MAX_CONCURRENT_BUILDS)
# Export requests at once per process (building, waiting for a build or for the format's lock,
# hashing a cached archive). Each holds one of the threads AnyIO lends to every sync route and
# sync dependency, the database session included (40 by default): unbounded, a few dozen
# requests waiting on one build would stall the whole API. Past it, 429 with Retry-After.
MAX_EXPORT_REQUESTS = 4
RETRY_AFTER_S = 15  # about one ONNX build of MiniLM on 2 cores, the usual wait ahead
_admitted = threading.BoundedSemaphore(MAX_EXPORT_REQUESTS)


@dataclass(frozen=True)
class ExportSource:
    """What an export needs of a version row, read before the session closes."""

    ref: str
    info: VersionInfo
    artifact_path: str
    files: dict[str, str]
    archived: bool

    @classmethod
    def of(cls, row: ModelVersion) -> ExportSource:
        return cls(row.ref, VersionInfo(row.model_name, row.version, dict(row.metrics or {}),
                                        dict(row.lineage or {})),
                   row.artifact_path, dict(row.files), bool(row.archived))


@dataclass
class Export:
    """An open, verified export archive; `cache` is `hit`, `built` or `rebuilt` (the cached
    copy was corrupt)."""

    handle: IO[bytes]
    sha256: str
    size: int
    filename: str
    cache: str

    def chunks(self) -> Iterator[bytes]:
        """The archive's bytes (the verified file, even if a rebuild replaces it meanwhile);
        closes the file at the end."""
        try:
            self.handle.seek(0)
            while chunk := self.handle.read(CHUNK):
                yield chunk
        finally:
            self.handle.close()


def open_export(source: ExportSource, fmt: str, *, artifacts_root: Path,
                models_dir: Path) -> Export:
    """The `fmt` export of a version, from the cache when its sha256 still matches, else built.

    Blocking (a build loads the base model and may take a minute): call it from a thread.

    Raises:
        ValueError: `fmt` is not one of FORMATS (the route refuses it first, with 422).
        Conflict: 409 `not_exportable` when the version's files or its base model cannot be
            read or the exporter fails (`details.reason` is the underlying code, e.g.
            `artifact_corrupt`, `base_mismatch`, `student_unloadable`, `export_failed`).
        Unavailable: 503 `export_unwritable` when the artifact store refuses the cache files.
        Overloaded: 429 with Retry-After when MAX_EXPORT_REQUESTS are already in progress.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    if not _admitted.acquire(blocking=False):
        raise Overloaded(f"{MAX_EXPORT_REQUESTS} exports are being built or checked in this "
                         "process; retry later", retry_after=RETRY_AFTER_S)
    try:
        return _open(source, fmt, artifacts_root=artifacts_root, models_dir=models_dir)
    finally:
        _admitted.release()


def _open(source: ExportSource, fmt: str, *, artifacts_root: Path, models_dir: Path) -> Export:
    root = artifacts_root.resolve()
    directory = (root / source.artifact_path).resolve()
    if not directory.is_relative_to(root) or not directory.is_dir():
        raise Conflict(f"{source.ref} cannot be exported: its artifact files are missing",
                       code="not_exportable", details={"reason": "artifact_missing"})
    cache = directory / EXPORTS_DIR
    try:
        cache.mkdir(exist_ok=True)
        with FileLock(cache / f"{fmt}.lock"):  # threads and processes sharing the store
            _sweep(cache, fmt)
            found, state = _cached(cache, fmt)
            if found is not None:
                return found
            with _builds:
                return _build(source, fmt, directory, cache, models_dir, state)
    except OSError as exc:
        log.exception("export of %s as %s failed", source.ref, fmt)
        raise Unavailable(f"{source.ref}: the export could not be written to the artifact "
                          f"store ({type(exc).__name__})", code="export_unwritable") from exc


def _sweep(cache: Path, fmt: str) -> None:
    """Remove what a build killed mid-way (OOM, SIGKILL, power loss) left: its work folder and
    manifest temp file, each as big as an export. Called under the format's lock, so no
    build of `fmt` in this cache is running."""
    for stale in cache.glob(f".{fmt}-*"):
        log.warning("removing %s, left by an interrupted export build", stale)
        shutil.rmtree(stale, ignore_errors=True)
    for stale in cache.glob(f".{fmt}.*.json"):
        stale.unlink(missing_ok=True)


def _manifest(cache: Path, fmt: str) -> Path:
    return cache / f"{fmt}.json"


def _cached(cache: Path, fmt: str) -> tuple[Export | None, str]:
    """The cached export, open and verified; else None and `built` (none yet) or `rebuilt`."""
    try:
        manifest = json.loads(_manifest(cache, fmt).read_text())
    except FileNotFoundError:
        return None, "built"
    except ValueError:
        log.warning("export manifest %s is unreadable; rebuilding", _manifest(cache, fmt))
        return None, "rebuilt"
    fields = manifest if isinstance(manifest, dict) else {}
    name, filename = fields.get("file"), fields.get("filename")
    if not isinstance(name, str) or Path(name).name != name or not name.startswith(fmt) or \
            not isinstance(filename, str) or not DOWNLOAD_NAME.fullmatch(filename):
        log.warning("export manifest %s is malformed; rebuilding", _manifest(cache, fmt))
        return None, "rebuilt"
    try:
        handle = open(cache / name, "rb")  # noqa: SIM115 - Export.chunks closes it
    except FileNotFoundError:
        log.warning("cached export %s is missing; rebuilding", cache / name)
        return None, "rebuilt"
    digest, size = _hash(handle)
    if digest != manifest.get("sha256"):
        handle.close()
        log.warning("cached export %s does not match its sha256; rebuilding", cache / name)
        return None, "rebuilt"
    return Export(handle, digest, size, filename, "hit"), "hit"


def _hash(handle: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _build(source: ExportSource, fmt: str, directory: Path, cache: Path, models_dir: Path,
           state: str) -> Export:
    work = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=cache))
    try:
        try:
            folder = write_package(fmt, directory, work / package_name(source.info, fmt),
                                   source.info, models_dir=models_dir, files=source.files)
        except (ArtifactError, ModelSourceError) as exc:
            log.warning("%s cannot be exported as %s: %s", source.ref, fmt, exc.message)
            raise Conflict(f"{source.ref} cannot be exported: {exc.message}",
                           code="not_exportable", details={"reason": exc.code}) from exc
        name = f"{fmt}-{uuid.uuid4().hex[:12]}.tar.gz"
        write_archive(folder, cache / name)
        with open(cache / name, "rb") as fh:
            digest, size = _hash(fh)
        filename = f"{folder.name}.tar.gz"
        _replace_manifest(cache, fmt, {"file": name, "filename": filename, "sha256": digest,
                                       "size": size, "format": fmt})
        for old in cache.glob(f"{fmt}-*.tar.gz"):
            if old.name != name:
                old.unlink(missing_ok=True)  # readers streaming it keep their open file
        log.info("exported %s as %s (%d bytes, sha256 %s)", source.ref, fmt, size, digest)
        # Under the lock nothing replaces it before it opens; afterwards the open file stays.
        handle = open(cache / name, "rb")  # noqa: SIM115 - Export.chunks closes it
        return Export(handle, digest, size, filename, state)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replace_manifest(cache: Path, fmt: str, manifest: dict[str, Any]) -> None:
    # Not mkstemp: its 0600 would differ from the umask mode every other store file gets.
    tmp = cache / f".{fmt}.{uuid.uuid4().hex[:12]}.json"
    with open(tmp, "x") as fh:
        json.dump(manifest, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, _manifest(cache, fmt))


def headers(export: Export, source: ExportSource) -> dict[str, str]:
    """Response headers: file name, length, sha256, cache state and whether it is archived."""
    return {"Content-Disposition": f'attachment; filename="{export.filename}"',
            "Content-Length": str(export.size),
            "X-Tailor-Export-Sha256": export.sha256,
            "X-Tailor-Export-Cache": export.cache,
            "X-Tailor-Archived": "true" if source.archived else "false"}
