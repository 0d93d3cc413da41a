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


def test_a_bfloat16_teacher_runs_under_autocast_and_is_cached_apart(teacher):
    """teacher.precision bfloat16 on CPU: float32 weights, matrix products in bfloat16 under
    torch.autocast on every scoring path (question, channel, few-shot rows), scores close to
    the float32 teacher's, cache entries apart (bench/teacher.py measures it on the real one)."""
    import torch

    from worker.distill.prompts import prompt_pool

    bf16 = HFTeacher(teacher.source, "cpu", precision="bfloat16")
    assert bf16.precision == "bfloat16" and bf16.id == teacher.id + "+bf16"
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    seen: list[torch.dtype] = []
    linear = next(m for m in bf16.body.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    question, texts = default_prompts(TASK)[0], corpus(12)
    channel = next(p for p in prompt_pool(TASK, [])[0] if p.kind == "channel")
    runs = {"question": lambda t: t.score(question, texts, batch_size=4),
            "channel": lambda t: t.score(channel, texts, batch_size=4),
            "few-shot": lambda t: t.score_each([question] * len(texts), texts, batch_size=4)}
    for path, run in runs.items():
        seen.clear()
        low, full = run(bf16), run(teacher)
        assert seen and set(seen) == {torch.bfloat16}, path
        assert low.logprobs.dtype == np.float32 and np.isfinite(low.logprobs).all(), path
        assert not np.array_equal(low.logprobs, full.logprobs), path
        np.testing.assert_allclose(low.logprobs, full.logprobs, atol=0.5, err_msg=path)
    seen.clear()
    teacher.score(question, texts[:2])
    assert seen == [], "the hook sits on the bfloat16 teacher only"


def test_precision_auto_is_bfloat16_only_where_it_is_native(monkeypatch):
    import torch

    from worker.distill.teachers.causal_lm import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) == "bfloat16"
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert resolve_precision("auto", torch.device("cpu")) == (
            "bfloat16" if native else "float32")
    assert resolve_precision("float32", torch.device("cuda")) == "float32"
    assert resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float16", torch.device("cpu"))
