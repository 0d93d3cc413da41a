"""One job-spec contract: worker/distill/config.py declares every engine setting once; the
POST /jobs schema is derived from it, submission fills the defaults once, and the stored spec
is what the engine runs (embedded mode: SQLite, in-process app)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.tiny import corpus
from tests.support import job_body
from worker.distill.config import ConfigError, EngineConfig, StudentConfig, field_types
from worker.distill.engine import DistillData, run
from worker.distill.sources import resolve
from worker.distill.spec import choices, complete_spec, load_config
from worker.distill.student import build_student

# Config metadata -> JSON Schema keyword (a list's lengths count items, a string's characters).
NUMBER_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum",
                 "lt": "exclusiveMaximum"}
SCHEMA_BOUNDS = {*NUMBER_BOUNDS.values(), "minLength", "maxLength", "minItems", "maxItems"}


def _target(openapi: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """The object schema a property refers to ($ref, possibly inside allOf / anyOf)."""
    refs = [prop, *prop.get("allOf", []), *prop.get("anyOf", [])]
    (ref,) = [r["$ref"] for r in refs if "$ref" in r]
    return openapi["components"]["schemas"][ref.split("/")[-1]]


def _engine_fields(openapi: dict[str, Any], cls: type, node: dict[str, Any], path: str
                   ) -> Iterator[tuple[str, Field[Any], Any, dict[str, Any], dict[str, Any]]]:
    """(dotted path, dataclass field, its type, its schema property, the owning object
    schema) for every field of `cls`, recursively."""
    for f in fields(cls):
        where, tp = f"{path}.{f.name}", field_types(cls)[f.name]
        assert f.name in node["properties"], f"{where} is missing from the POST /jobs schema"
        prop = node["properties"][f.name]
        yield where, f, tp, prop, node
        if is_dataclass(tp):
            yield from _engine_fields(openapi, typing.cast(type, tp), _target(openapi, prop),
                                      where)
        elif typing.get_origin(tp) is list and is_dataclass(typing.get_args(tp)[0]):
            yield from _engine_fields(openapi, typing.get_args(tp)[0],
                                      _target(openapi, prop["items"]), f"{where}[]")


def _schema_bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """Bounds on the property and on the members of its union (e.g. `str | None`)."""
    found: dict[str, Any] = {}
    for part in (prop, *prop.get("anyOf", [])):
        found.update({k: v for k, v in part.items() if k in SCHEMA_BOUNDS})
    return found


def _declared_bounds(f: Field[Any], tp: Any) -> dict[str, Any]:
    is_list = typing.get_origin(tp) is list or any(
        typing.get_origin(a) is list for a in typing.get_args(tp))
    want = {NUMBER_BOUNDS[k]: v for k, v in f.metadata.items() if k in NUMBER_BOUNDS}
    for key, word in (("min_length", "min"), ("max_length", "max")):
        if key in f.metadata:
            want[f"{word}{'Items' if is_list else 'Length'}"] = f.metadata[key]
    return want


def _enum(prop: dict[str, Any]) -> list[Any] | None:
    for part in (prop, prop.get("items", {})):
        if "enum" in part:
            return list(part["enum"])
        if "const" in part:  # a registry of one name
            return [part["const"]]
    return None


def test_every_engine_field_is_in_the_post_jobs_schema_with_its_default_and_bounds(client):
    openapi = client.get("/openapi.json").json()
    body = openapi["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    job = _target(openapi, body["schema"])
    names = choices()
    seen = []
    for section in ("task", "teacher", "student", "distillation"):
        cls = field_types(EngineConfig)[section]
        for where, f, tp, prop, owner in _engine_fields(openapi, cls, _target(
                openapi, job["properties"][section]), section):
            seen.append(where)
            assert prop.get("description") == f.metadata["help"], where
            assert _schema_bounds(prop) == _declared_bounds(f, tp), where
            if f.default is not MISSING:  # (FastAPI leaves a null default out)
                assert prop.get("default") == f.default, where
                assert f.name not in owner.get("required", []), where
            elif f.default_factory is not MISSING and not is_dataclass(f.default_factory()):
                assert prop["default"] == f.default_factory(), where
            elif f.default_factory is MISSING:
                assert f.name in owner.get("required", []), where
            if where in names:  # the registry's names, not a copy of them
                assert _enum(prop) == list(names[where]), where
    # The settings the API could not set before it was derived from the config:
    assert {"teacher.prefix_cache", "student.adapter.target_modules"} <= set(seen)


def test_strategy_names_come_from_the_registry(client):
    openapi = client.get("/openapi.json").json()
    strategy = openapi["components"]["schemas"]["DistillationIn"]["properties"]["strategy"]
    assert set(strategy["enum"]) == {"adaptive", "vanilla_kd", "pseudo_label"}
    assert strategy["enum"] == list(choices()["distillation.strategy"])


@pytest.fixture
def body(client: TestClient, tiny_models: tuple[str, str]) -> dict[str, Any]:
    resp = client.post("/datasets", json={"name": "d",
                                          "records": [{"text": t} for t in corpus(30)]})
    assert resp.status_code == 201, resp.text
    return job_body("crisis", resp.json()["id"], *tiny_models)


def test_settings_only_the_engine_knew_are_settable_and_stored(client, body):
    body["teacher"]["prefix_cache"] = False
    body["student"]["adapter"] = {"target_modules": ["query", "value"]}
    body["distillation"] = {**body.get("distillation", {}), "replay_ratio": 2.0}
    resp = client.post("/jobs", json=body)
    assert resp.status_code == 202, resp.text
    spec = resp.json()["spec"]
    assert spec["teacher"]["prefix_cache"] is False
    assert spec["student"]["adapter"]["target_modules"] == ["query", "value"]
    cfg = load_config(spec)  # what the worker builds from the stored spec
    assert cfg.teacher.prefix_cache is False and cfg.distillation.replay_ratio == 2.0


def test_the_stored_spec_is_complete_and_filled_as_complete_spec_fills_it(client, body,
                                                                           tiny_models):
    del body["teacher"]["model"]  # the service default fills it
    resp = client.post("/jobs", json=body)
    assert resp.status_code == 202, resp.text
    spec = resp.json()["spec"]
    from app.core.config import get_settings

    settings = get_settings()
    assert spec["teacher"]["model"] == settings.default_teacher
    expected = complete_spec(body, teacher_model=settings.default_teacher,
                             student_model=settings.default_student)
    for section in ("task", "teacher", "student", "distillation"):
        assert spec[section] == expected[section], section
    # Every setting is in it, at its declared default where the body named none.
    assert spec["teacher"]["demo_chars"] == 300 and spec["distillation"]["align_weight"] == 0.5
    assert load_config(spec).to_dict() == {k: spec[k] for k in
                                           ("task", "teacher", "student", "distillation")}
    # A stored spec is a valid request as it stands (the dashboard's "clone" sends it back).
    again = client.post("/jobs", json=spec)
    assert again.status_code == 202, again.text
    assert again.json()["spec"] == spec


@pytest.mark.parametrize("over, field", [
    ({"teacher": {"demo_chars": 5}}, "teacher.demo_chars"),
    ({"teacher": {"bootstrap_rounds": 10_001}}, "teacher.bootstrap_rounds"),
    ({"student": {"adapter": {"target_modules": []}}}, "student.adapter.target_modules"),
    ({"student": {"adapter": {"target_modules": "query"}}}, "student.adapter.target_modules"),
    ({"distillation": {"align_loss": "soft_ce"}}, "distillation.align_loss"),
    ({"teacher": {"precision": "float16"}}, "teacher.precision"),
    ({"teacher": {"precision": True}}, "teacher.precision"),
    ({"teacher": {"extra_labelers": ["magic"]}}, "teacher.extra_labelers[0]"),
    ({"teacher": {"colour": "red"}}, "teacher.colour"),
    # Each module name is a name, never a regex peft would search with, nor one no module has.
    ({"student": {"adapter": {"target_modules": [".*"]}}}, "student.adapter.target_modules[0]"),
    ({"student": {"adapter": {"target_modules": ["query", ""]}}},
     "student.adapter.target_modules[1]"),
    ({"student": {"adapter": {"target_modules": ["query\x01"]}}},
     "student.adapter.target_modules[0]"),
    ({"student": {"adapter": {"target_modules": ["q" * 201]}}},
     "student.adapter.target_modules[0]"),
    ({"teacher": {"prompts": ["{text}" + "x" * 4000]}}, "teacher.prompts[0]"),
    ({"teacher": {"extra_labelers": ["embedding"] * 17}}, "teacher.extra_labelers"),
    # {text} pasted into the prompt templates from a task string used to submit fine and end
    # the job in the teacher ("too many values to unpack").
    ({"task": {"instruction": "Read {text} carefully."}}, "task.instruction"),
    ({"task": {"labels": [{"name": "crisis", "description": "a {text}"}, {"name": "calm"}]}},
     "task.labels[0].description"),
    ({"task": {"labels": [{"name": "crisis"}, {"name": "calm", "verbalizer": "no\nyes"}]}},
     "task.labels[1].verbalizer"),
    # A switch that may be "auto" is one field, not one error per union member with
    # pydantic's member tags in its name ("distillation.representations.bool"); 1 is not true.
    ({"distillation": {"representations": "maybe"}}, "distillation.representations"),
    ({"distillation": {"progressive": 1}}, "distillation.progressive"),
])
def test_config_bounds_and_registry_names_are_enforced_by_the_api(client, body, over, field):
    for section, values in over.items():
        if section == "student" and "adapter" in values:
            values = {"adapter": {**body.get(section, {}).get("adapter", {}), **values["adapter"]}}
        body[section] = {**body.get(section, {}), **values}
    resp = client.post("/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"].startswith(f"{field}: "), resp.json()
    assert client.get("/jobs").json()["jobs"] == []
    assert len(resp.json()["error"]["details"]) == 1, resp.json()


def test_the_same_bounds_hold_when_the_engine_is_called_directly():
    spec = {"task": {"labels": [{"name": "crisis"}, {"name": "calm"}]}}
    with pytest.raises(ConfigError) as err:
        load_config({**spec, "teacher": {"demo_chars": 5}})
    assert err.value.field == "teacher.demo_chars"
    with pytest.raises(ConfigError) as err:
        load_config({**spec, "distillation": {"align_loss": "soft_ce"}})
    assert err.value.field == "distillation.align_loss"


def test_target_modules_never_reach_peft_as_a_regex_from_direct_engine_use():
    spec = {"task": {"labels": [{"name": "crisis"}, {"name": "calm"}]}}
    for bad in (".*", "query", ["(a+)+$"], ["attention.self.query\n"], [3]):
        with pytest.raises(ConfigError) as err:
            load_config({**spec, "student": {"adapter": {"target_modules": bad}}})
        assert err.value.field.startswith("student.adapter.target_modules"), bad
    cfg = load_config({**spec, "student": {"adapter": {
        "target_modules": ["query", "attention.self.value", "layer.0.output.dense"]}}})
    assert cfg.student.adapter.target_modules == ["query", "attention.self.value",
                                                  "layer.0.output.dense"]


def test_task_strings_cannot_add_a_second_text_placeholder():
    labels = [{"name": "crisis", "description": "about {text}"}, {"name": "calm"}]
    with pytest.raises(ConfigError) as err:
        load_config({"task": {"labels": labels}})
    assert err.value.field == "task.labels[0].description"
    with pytest.raises(ConfigError) as err:
        load_config({"task": {"labels": labels[1:] + [{"name": "x"}], "instruction": "{text}"}})
    assert err.value.field == "task.instruction"


def test_item_bounds_are_in_the_openapi_schema(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    modules = schemas["AdapterIn"]["properties"]["target_modules"]["anyOf"][0]["items"]
    assert modules["maxLength"] == 200 and modules["pattern"].startswith("^[A-Za-z_]")
    assert schemas["TeacherIn"]["properties"]["prompts"]["items"]["maxLength"] == 4000


def test_the_engine_runs_only_a_complete_spec(tmp_path):
    cfg = load_config({"task": {"labels": [{"name": "crisis"}, {"name": "calm"}]}})
    with pytest.raises(ConfigError) as err:
        run(cfg, DistillData(corpus(30)), workdir=tmp_path / "w", cache_dir=tmp_path / "c")
    assert err.value.field == "teacher.model"


def test_target_modules_the_encoder_lacks_are_named(tmp_path, tiny_models):
    base = resolve(tiny_models[1], tmp_path)
    cfg = StudentConfig(adapter={"target_modules": ["no_such_module"]})
    with pytest.raises(ConfigError) as err:
        build_student(base, cfg, num_labels=2, proj_dim=None, seed=0)
    assert err.value.field == "student.adapter.target_modules"
    student, _ = build_student(base, StudentConfig(adapter={"target_modules": ["query"]}),
                               num_labels=2, proj_dim=None, seed=0)
    adapted = {n for n, _ in student.named_parameters() if "lora_A" in n}
    assert adapted and all(".query." in n for n in adapted)
