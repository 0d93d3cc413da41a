"""Convert once, reuse, checksummed: worker.distill.sources.converted (the GGUF teacher is
converted to a transformers folder in the model cache once; see bench/teacher.py for the
real model's load times and the identical scores)."""

import json
import threading
import time
from pathlib import Path

import pytest

from worker.distill.sources import CONVERSION_MANIFEST, ResolvedModel, converted, sha256_file

MODEL = ResolvedModel("pypi://pkg/m.gguf", Path("/nowhere"), "m.gguf", "a" * 64)


class Builder:
    """A `build` that writes two files and counts its calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def __call__(self, out: Path) -> None:
        with self.lock:
            self.calls += 1
        (out / "config.json").write_text('{"model_type": "llama"}')
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("converter crashed")
        (out / "model.safetensors").write_bytes(b"\x00" * 4096)


def test_converts_once_then_reuses_the_checksummed_folder(tmp_path):
    build = Builder()
    first = converted(MODEL, tmp_path, "v1", build)
    again = converted(MODEL, tmp_path, "v1", build)
    assert first == again and build.calls == 1
    manifest = json.loads((first / CONVERSION_MANIFEST).read_text())
    assert manifest["source_sha256"] == MODEL.sha256 and manifest["tag"] == "v1"
    assert manifest["files"] == {name: sha256_file(first / name)
                                 for name in ("config.json", "model.safetensors")}
    # another tag (a new converter version) or another source is another conversion
    assert converted(MODEL, tmp_path, "v2", build) != first and build.calls == 2
    other = ResolvedModel(MODEL.uri, MODEL.path, MODEL.file, "b" * 64)
    assert converted(other, tmp_path, "v1", build) != first and build.calls == 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "manifest"])
def test_a_corrupt_or_partial_conversion_is_rebuilt(tmp_path, damage):
    build = Builder()
    folder = converted(MODEL, tmp_path, "v1", build)
    weights = folder / "model.safetensors"
    if damage == "flip":
        weights.write_bytes(b"\x01" + weights.read_bytes()[1:])
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "delete":
        weights.unlink()
    elif damage == "extra":
        (folder / "stray.bin").write_bytes(b"?")
    else:
        (folder / CONVERSION_MANIFEST).write_text("{not json")
    again = converted(MODEL, tmp_path, "v1", build)
    assert again == folder and build.calls == 2
    assert weights.read_bytes() == b"\x00" * 4096 and not (folder / "stray.bin").exists()
    assert [p.name for p in tmp_path.joinpath("converted").iterdir()
            if ".tmp-" in p.name] == [], "no temporary folder is left behind"


def test_a_failed_conversion_leaves_nothing_and_a_killed_ones_leftovers_are_cleared(tmp_path):
    with pytest.raises(RuntimeError, match="converter crashed"):
        converted(MODEL, tmp_path, "v1", Builder(fail=True))
    root = tmp_path / "converted"
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    # a converter killed mid-way (no cleanup ran) leaves its temporary folder
    key = next(root.glob("*.lock")).name.removesuffix(".lock")
    (root / f"{key}.tmp-dead").mkdir()
    (root / f"{key}.tmp-dead" / "config.json").write_text("{}")
    build = Builder()
    folder = converted(MODEL, tmp_path, "v1", build)
    assert build.calls == 1 and folder.name == key
    assert not (root / f"{key}.tmp-dead").exists()


def test_concurrent_converters_convert_once_and_never_see_a_partial_folder(tmp_path):
    build = Builder(delay=0.2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def convert() -> None:
        try:
            folder = converted(MODEL, tmp_path, "v1", build)
            # what a caller gets is complete the moment it gets it
            assert (folder / "model.safetensors").stat().st_size == 4096
            results.append(folder)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=convert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 4
    assert build.calls == 1


def test_a_teacher_folder_is_read_as_it_is(tmp_path, tiny_models):
    """Only GGUF files are converted: a transformers folder loads in place."""
    from worker.distill.sources import resolve
    from worker.distill.teachers import load_teacher

    teacher = load_teacher(resolve(tiny_models[0], tmp_path / "m"), "cpu",
                           cache_dir=tmp_path / "cache")
    assert teacher.total_params > 0 and not (tmp_path / "cache" / "converted").exists()
