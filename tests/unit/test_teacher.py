import numpy as np
import pytest

from tests.fixtures.tiny import build_teacher, corpus
from worker.distill.config import TaskConfig
from worker.distill.prompts import Prompt, default_prompts
from worker.distill.sources import resolve
from worker.distill.teachers import HFTeacher, TeacherError

TASK = TaskConfig(labels=[{"name": "crisis"}, {"name": "calm", "verbalizer": "none"}],
                  instruction="You monitor news for emergencies.")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = build_teacher(tmp_path_factory.mktemp("t") / "teacher")
    return HFTeacher(resolve(str(path), tmp_path_factory.mktemp("c")), "cpu")


def test_prefix_cache_gives_the_same_scores_as_full_sequences(teacher):
    prompt = default_prompts(TASK)[0]
    texts = corpus(23)
    cached = teacher.score(prompt, texts, batch_size=5, prefix_cache=True)
    full = teacher.score(prompt, texts, batch_size=5, prefix_cache=False)
    np.testing.assert_allclose(cached.logprobs, full.logprobs, atol=1e-4)
    np.testing.assert_allclose(cached.hidden, full.hidden, atol=1e-4)


def test_scores_do_not_depend_on_batching_or_order(teacher):
    prompt = default_prompts(TASK)[0]
    texts = corpus(12)
    a = teacher.score(prompt, texts, batch_size=4)
    b = teacher.score(prompt, texts[::-1], batch_size=12)
    np.testing.assert_allclose(a.logprobs, b.logprobs[::-1], atol=1e-4)


def test_options_sharing_a_first_token_are_refused(teacher):
    bad = Prompt("p", "Message: {text}", ("no", "no"))
    with pytest.raises(TeacherError) as err:
        teacher.option_ids(bad.options)
    assert err.value.code == "verbalizer_collision"


def test_option_the_vocabulary_cannot_express_is_refused(teacher):
    with pytest.raises(TeacherError) as err:
        teacher.option_ids(("crisis", "zzzqqq"))
    assert err.value.code == "verbalizer_unexpressible"


def test_multi_label_prompts_are_yes_no_per_label():
    task = TaskConfig(labels=[{"name": "flood"}, {"name": "fire"}], multi_label=True)
    prompts = default_prompts(task)
    assert [p.label for p in prompts] == ["flood", "fire"]
    assert all(p.options == ("yes", "no") for p in prompts)
    assert prompts[0].id != prompts[1].id


def test_an_int8_teacher_is_quantized_scores_close_and_is_cached_apart(tmp_path, teacher):
    """bench/teacher.py measures this switch on the real teacher (it is not a job setting)."""
    import torch

    int8 = HFTeacher(teacher.source, "cpu", quantize="int8")
    assert int8.id == teacher.id + "+int8", "its scores differ: never served from fp32 entries"
    linear = [m for m in int8.model.modules() if type(m) is torch.nn.Linear]
    assert linear == [], "every linear layer (LM head included) runs in int8"
    prompt = default_prompts(TASK)[0]
    texts = corpus(12)
    fp32, low = teacher.score(prompt, texts, batch_size=4), int8.score(prompt, texts, batch_size=4)
    assert low.logprobs.shape == fp32.logprobs.shape and np.isfinite(low.logprobs).all()
    assert np.abs(low.logprobs - fp32.logprobs).max() < 0.5


def test_channel_scoring_ticks_after_every_label_of_a_batch(teacher):
    """A shard's lease is kept while its teacher progresses: a batch scored under many labels
    ticks (0 texts) after each label, not only once at its end."""
    from worker.distill.prompts import prompt_pool

    task = TaskConfig(labels=[{"name": n} for n in ("crisis", "calm", "sport")])
    channel = next(p for p in prompt_pool(task, [])[0] if p.kind == "channel")
    ticks: list[int] = []
    teacher.score(channel, corpus(5), batch_size=2, on_batch=ticks.append)
    assert ticks == [0, 0, 2, 0, 0, 2, 0, 0, 1]  # 3 batches of 3 labels
