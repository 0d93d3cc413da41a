import os
import stat

import pytest
import torch

from worker.distill.config import StudentConfig
from worker.distill.sources import resolve
from worker.distill.student import (
    ArtifactError,
    attach,
    build_student,
    head_from,
    load_base,
    read_artifact,
    save_student,
)


@pytest.fixture
def saved(tmp_path, tiny_models):
    base = resolve(tiny_models[1], tmp_path)
    student, tok = build_student(base, StudentConfig(), num_labels=3, proj_dim=None, seed=0)
    with torch.no_grad():  # make the adapter non-trivial so the round trip is meaningful
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_()
    files = save_student(student, tmp_path / "s", {"labels": ["a", "b", "c"],
                                                   "adapter": {"r": 8}})
    return base, student, tok, files


def test_save_and_reload_gives_the_same_outputs(tmp_path, saved):
    base, student, tok, files = saved
    student.eval()
    enc = tok(["flood water rose", "stock market"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, _ = student(enc["input_ids"], enc["attention_mask"])
    artifact = read_artifact(tmp_path / "s", files)
    encoder, _ = load_base(base)
    model = attach(encoder, artifact, "v1").eval()
    head = head_from(artifact)
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        got = head(pooled)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_a_flipped_byte_is_refused(tmp_path, saved):
    *_, files = saved
    path = tmp_path / "s" / "adapter.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        read_artifact(tmp_path / "s", files)
    assert err.value.code == "artifact_corrupt"


def test_only_adapter_and_head_train(saved):
    _, student, _, _ = saved
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_follow_the_umask_so_another_user_can_serve_them(tmp_path, saved,
                                                                       umask, mode):
    """The weights were written 0600 while student.json was 0644: an API running as another
    user of the group could not load what a worker registered."""
    _base, student, _tok, _files = saved
    previous = os.umask(umask)
    try:
        out = tmp_path / f"umask-{umask:o}"
        files = save_student(student, out, {"labels": ["a", "b", "c"], "adapter": {"r": 8}})
    finally:
        os.umask(previous)
    assert {name: stat.S_IMODE((out / name).stat().st_mode) for name in files} == {
        name: mode for name in files}
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
