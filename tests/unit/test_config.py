import pytest

from worker.distill.config import ConfigError, EngineConfig, TaskConfig, TeacherConfig
from worker.distill.spec import load_config

TWO = [{"name": "crisis"}, {"name": "calm"}]


def test_fewer_than_two_labels_is_refused():
    with pytest.raises(ConfigError) as err:
        TaskConfig(labels=[{"name": "crisis"}])
    assert err.value.field == "task.labels"


def test_duplicate_labels_are_refused_case_insensitively():
    with pytest.raises(ConfigError) as err:
        TaskConfig(labels=[{"name": "crisis"}, {"name": "Crisis"}])
    assert err.value.field == "task.labels[1].name"


def test_prompt_without_text_placeholder_is_refused():
    with pytest.raises(ConfigError) as err:
        TeacherConfig(prompts=["Is this a crisis?"])
    assert err.value.field == "teacher.prompts[0]"


def test_unknown_strategy_and_keys_are_refused():
    # Strategy names live in their registry: a spec is checked against it when loaded.
    with pytest.raises(ConfigError, match="distillation.strategy"):
        load_config({"task": {"labels": TWO}, "distillation": {"strategy": "magic"}})
    with pytest.raises(ConfigError):
        EngineConfig.from_dict({"task": {"labels": TWO}, "student": {"colour": "red"}})


def test_round_trip_through_dict_keeps_everything():
    cfg = EngineConfig.from_dict({"task": {"labels": TWO, "instruction": "news"},
                                  "student": {"adapter": {"r": 4}, "max_length": 64}})
    again = EngineConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.student.adapter.lora_alpha == 8


def test_two_labels_answering_with_the_same_word_are_refused():
    with pytest.raises(ConfigError) as err:
        TaskConfig(labels=[{"name": "fire"}, {"name": "blaze", "verbalizer": "Fire"}])
    assert err.value.field == "task.labels[1].verbalizer"
