"""The Python client's pure parts: where it connects, how errors read, spec files."""

from __future__ import annotations

import pytest

from tailor import Client, Connection, JobFailed, TailorError
from tailor.client import _server_limit, _with_index
from tailor.specs import load_spec


def test_arguments_then_environment_then_config_file(tmp_path, monkeypatch):
    for name in ("TAILOR_URL", "TAILOR_API_KEY", "TAILOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "c.toml"
    config.write_text('url = "http://file:1/"\napi_key = "from-file"\n')
    monkeypatch.setenv("TAILOR_CONFIG", str(config))
    assert Connection.resolve() == Connection("http://file:1", "from-file")
    monkeypatch.setenv("TAILOR_URL", "http://env:2")
    monkeypatch.setenv("TAILOR_API_KEY", "from-env")
    assert Connection.resolve() == Connection("http://env:2", "from-env")
    client = Client("http://arg:3/", "from-arg")
    assert (client.url, client.connection.api_key) == ("http://arg:3", "from-arg")
    assert client.transport.http.headers["authorization"] == "Bearer from-arg"
    client.close()
    with pytest.raises(TailorError) as missing:
        Client(config=str(tmp_path / "absent.toml"))
    assert (missing.value.status, missing.value.code) == (None, "config_not_found")
    config.write_text("url = \n")
    with pytest.raises(TailorError, match="cannot read config file"):
        Client()


def test_errors_carry_status_code_message_details():
    err = TailorError(404, "not_found", "no job 'x'", {"field": "job_id"})
    assert str(err) == "no job 'x' (not_found, HTTP 404)"
    assert str(TailorError(None, "timeout", "slow")) == "slow (timeout)"
    failed = JobFailed({"id": "job_1", "state": "failed",
                        "error": {"code": "teacher_failed", "message": "out of memory"}})
    assert isinstance(failed, TailorError) and failed.status is None
    assert (failed.code, failed.message, failed.job["id"]) == ("teacher_failed", "out of memory",
                                                               "job_1")
    cancelled = JobFailed({"id": "job_2", "state": "cancelled", "error": None})
    assert (cancelled.code, cancelled.message) == ("job_cancelled", "job job_2 was cancelled")


def test_a_refused_text_is_located_in_the_callers_list():
    err = TailorError(422, "invalid_text", "texts[2]: empty", {"field": "texts[2]"})
    located = _with_index(err, 64)
    assert located.details == {"field": "texts[2]", "index": 66}
    assert located.message == "texts[2]: empty"  # the server's words stay verbatim
    other = TailorError(422, "invalid", "model: too long", {"field": "model"})
    assert _with_index(other, 64) is other
    assert _server_limit(TailorError(413, "payload_too_large", "...",
                                     {"field": "texts", "max_texts": 8})) == 8
    assert _server_limit(TailorError(413, "payload_too_large", "body too large")) is None
    assert _server_limit(TailorError(422, "too_many_to_explain", "...",
                                     {"field": "texts", "max_texts": 8})) == 8
    assert _server_limit(TailorError(422, "invalid", "...",
                                     {"field": "texts", "max_texts": 8})) is None


def test_spec_files_are_read_strictly(tmp_path):
    with pytest.raises(TailorError) as unreadable:
        load_spec(tmp_path / "absent.yaml")
    assert unreadable.value.code == "spec_unreadable"
    (tmp_path / "twice.yaml").write_text("name: a\nname: b\n")
    with pytest.raises(TailorError) as twice:
        load_spec(tmp_path / "twice.yaml")
    assert twice.value.code == "invalid_spec" and "line 2" in twice.value.message
    (tmp_path / "ok.json").write_text('{"name": "a", "task": {"labels": [{"name": "no"}]}}')
    assert load_spec(tmp_path / "ok.json")["task"]["labels"] == [{"name": "no"}]


def test_batch_size_on_a_fresh_client_is_taken_as_given():
    """No limit learnt yet: `min(batch_size)` of one int raised TypeError before."""
    client = Client("http://127.0.0.1:1")
    assert client._batch(3) == 3
    assert client._batch(0) == 1
    assert client._batch(None) == 256 and client._batch(None, explain=True) == 8
    client.max_texts = 2
    assert client._batch(3) == 2
    client.close()


def test_export_into_a_missing_folder_raises_a_tailor_error(tmp_path):
    client = Client("http://127.0.0.1:1")
    with pytest.raises(TailorError) as refused:
        client.models.export("crisis", 1, "onnx", tmp_path / "absent" / "m.onnx")
    assert (refused.value.status, refused.value.code) == (None, "file_unwritable")
    client.close()
