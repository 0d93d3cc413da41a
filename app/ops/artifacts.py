"""Readiness of the artifact store: writable, and holding what the registry references.

A writable folder is not enough: an API process pointed at another folder than the workers'
shared store (a missing mount, a wrong TAILOR_ARTIFACTS_DIR) is writable too, yet answers
503 `artifact_missing` for every model. So readiness also opens the files of a small sample
of registered versions: the ones behind aliases (what callers are served, e.g.
`crisis@production`) and the newest ones (what finished jobs just registered). Checksums are
not computed (that is /classify's job, file by file, before loading): readiness is polled
every few seconds and must stay cheap, at most (ALIASED_SAMPLE + RECENT_SAMPLE) x 3 opens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ModelAlias, ModelVersion

log = logging.getLogger(__name__)

# Aliases are what production traffic names; the most recently moved ones first.
ALIASED_SAMPLE = 5
# The newest versions: a store that misses recent registrations is a store that missed the
# workers' writes (the usual cause: the API is not on the workers' shared volume).
RECENT_SAMPLE = 3
PROBE_NAME = ".ready-probe"


@dataclass(frozen=True)
class StoreCheck:
    """`missing`: `name:version file` for each sampled file that cannot be opened and read;
    `sampled`: how many versions were looked at."""

    sampled: int
    missing: list[str]

    def verdict(self) -> str:
        """The readiness check's value: "ok" or "error: ..." without model names (/readyz
        needs no key; the names go to the log)."""
        if not self.missing:
            return "ok"
        versions = len({item.split(" ", 1)[0] for item in self.missing})
        return (f"error: {versions} of {self.sampled} sampled registered versions have files "
                "missing or unreadable in this artifact store (is TAILOR_ARTIFACTS_DIR the "
                "workers' shared store, readable by this process?)")


def check_writable(root: Path) -> str:
    """"ok" when a file can be created and removed in `root`, else "error: <reason>"."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / PROBE_NAME
        probe.write_text("ok")
        probe.unlink()
        return "ok"
    except OSError as exc:
        return f"error: {exc.strerror}"


def sample_versions(db: Session) -> list[ModelVersion]:
    """Aliased versions (most recently moved first) and the newest ones, without repeats."""
    aliased = db.scalars(
        select(ModelVersion).join(ModelAlias, (ModelAlias.model_name == ModelVersion.model_name)
                                  & (ModelAlias.version == ModelVersion.version))
        .order_by(ModelAlias.updated_at.desc()).limit(ALIASED_SAMPLE)).all()
    recent = db.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())
                        .limit(RECENT_SAMPLE)).all()
    seen: dict[int, ModelVersion] = {}
    for version in [*aliased, *recent]:
        seen.setdefault(version.id, version)
    return list(seen.values())


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.read(1)
        return True
    except OSError:
        return False


def check_registered(db: Session, root: Path) -> StoreCheck:
    """Open every registered file of the sampled versions under `root` (the artifact store)."""
    root = root.resolve()
    versions = sample_versions(db)
    missing: list[str] = []
    for version in versions:
        directory = (root / version.artifact_path).resolve()
        names = sorted(version.files) or ["(no files registered)"]
        for name in names:
            path = directory / name
            if not directory.is_relative_to(root) or not _readable(path):
                missing.append(f"{version.ref} {name}")
    _log_change(root, missing)
    return StoreCheck(sampled=len(versions), missing=missing)


_last_missing: list[str] = []


def _log_change(root: Path, missing: list[str]) -> None:
    # Readiness is polled every few seconds: say what is missing when it changes, not each time.
    global _last_missing
    if missing and missing != _last_missing:
        log.warning("artifact store %s lacks registered files: %s", root, ", ".join(missing))
    _last_missing = missing
