"""`tailor models export` against a real embedded Tailor API (SQLite; no worker needed: the
versions are registered directly), as its own process through the installed `tailor` script:
the archive lands where -o says (or under its default name), an archived version is named as
such, and a wrong format or version fails with the server's message and no file left."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.versions import register_tiny
from tests.integration.test_cli_verbs import ADMIN, TRAINER, ok, refused, tailor
from tests.support import Stack, embedded_home, make_env

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[str, str]
           ) -> Iterator[Stack]:
    """An API with crisis:1 (archived) and crisis:2."""
    root = tmp_path_factory.mktemp("cli-export")
    with pytest.MonkeyPatch.context() as mp, embedded_home(root, mp) as home:
        register_tiny(tiny_models[1], seed=1)
        register_tiny(tiny_models[1], seed=2)
    stack = Stack(home, make_env(home, TAILOR_API_KEYS=f"{ADMIN}:admin,{TRAINER}:train"))
    stack.start_api()
    archived = httpx.post(f"{stack.url}/models/crisis/versions/1/archive",
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert archived.status_code == 200, archived.text
    yield stack
    stack.discard()


def test_models_export_writes_the_archive(server, tmp_path):
    target = tmp_path / "out.tar.gz"
    proc = tailor(server, "models", "export", "crisis:1", "--format", "hf", "-o", str(target))
    assert f"crisis:1 (hf) → {target}" in ok(proc)
    assert "crisis:1 is archived" in proc.stderr
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert "crisis-v1-hf/head.safetensors" in names and "crisis-v1-hf/README.md" in names

    # NAME alone: the latest version, under the default file name in the working directory.
    assert "crisis:2 (hf)" in ok(tailor(server, "models", "export", "crisis", "-f", "hf"))
    assert (server.home / "crisis-v2-hf.tar.gz").is_file()


def test_models_export_refusals_leave_no_file(server, tmp_path):
    bad_format = refused(tailor(server, "models", "export", "crisis:2", "-f", "pickle",
                                "-o", str(tmp_path / "x.tar.gz")))
    assert "format" in bad_format
    absent = refused(tailor(server, "models", "export", "crisis:9", "-o",
                            str(tmp_path / "y.tar.gz")))
    assert "has no version 9" in absent
    assert list(tmp_path.iterdir()) == []
