"""Augmentation (issue 4, item 5): inputs change per batch, so the teacher-output cache is bypassed."""

from __future__ import annotations

import functools
import sys
import textwrap

import pytest
import torch
from test_distill import FAST, Counting, LossCalls, tiny_net, tiny_splits

from edgedistill.distill.augment import build_augment, random_shift
from edgedistill.distill.trainer import distill as _distill
from edgedistill.errors import UsageError

# Untrained teachers score at chance, which distill() refuses (RELIABILITY 30, tests/test_teacher_check.py):
# these tests are about the training loop, so they allow it.
distill = functools.partial(_distill, allow_weak_teacher=True)


def test_shift_moves_each_image_by_at_most_the_given_pixels():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one lit pixel in the centre
    out = random_shift(x, 2)
    assert out.shape == x.shape
    moves = set()
    for image in out:
        (y, xx) = torch.nonzero(image[0]).tolist()[0]
        assert abs(y - 4) <= 2 and abs(xx - 4) <= 2
        assert image.sum() == 1.0  # moved, not smeared; zeros came in
        moves.add((y, xx))
    assert len(moves) > 5  # each sample draws its own offset


def test_noise_has_the_given_spread():
    torch.manual_seed(0)
    x = torch.zeros(1000, 4)
    out = build_augment(["noise:0.5"])(x)
    assert out.std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("spec", ["shift:0", "shift:x", "noise:-1", "blur:3", "noise"])
def test_bad_specs_are_refused_with_the_forms(spec):
    with pytest.raises(UsageError, match="shift:<pixels>, noise:<std> or pkg.mod:factory"):
        build_augment([spec])


def test_shift_on_flat_data_is_refused():
    with pytest.raises(UsageError, match=r"needs images .* found a batch of shape \(2, 16\)"):
        build_augment(["shift:1"])(torch.zeros(2, 16))


def test_own_augmentation_must_keep_the_shape(tmp_path, monkeypatch):
    (tmp_path / "my_aug.py").write_text(textwrap.dedent("""
        def crop():
            return lambda x: x[..., 1:]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UsageError, match=r"must keep the batch shape \(2, 1, 4, 4\), found \(2, 1, 4, 3\)"):
            build_augment(["my_aug:crop"])(torch.zeros(2, 1, 4, 4))
    finally:
        sys.modules.pop("my_aug", None)


def test_augmented_run_runs_the_teacher_live_and_is_reproducible(tmp_path):
    splits = tiny_splits(tmp_path / "d.npz")
    cfg = FAST.model_copy(update={"augment": ["shift:1", "noise:0.1"]})
    notes = []
    runs = []
    for name in ("a", "b"):
        teacher = Counting(tiny_net(seed=1))
        result = distill(teacher, tiny_net(seed=2), splits, cfg, tmp_path / name, seed=0,
                         cache_dir=tmp_path / "cache", notify=notes.append)
        steps = len(result.history) * (len(splits.x_train) // cfg.batch_size)
        assert teacher.calls >= steps  # a teacher forward for every training batch
        runs.append(result)
    assert not list((tmp_path / "cache").glob("*"))  # nothing cached: the inputs never repeat
    assert "augmentation changes the inputs" in notes[0]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    plain = distill(tiny_net(seed=1), tiny_net(seed=2), splits, FAST, tmp_path / "plain", seed=0,
                    cache_dir=tmp_path / "cache")
    assert [h["loss"] for h in plain.history] != [h["loss"] for h in runs[0].history]  # it did augment


def test_interrupted_augmented_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    splits = tiny_splits(tmp_path / "d.npz")
    cfg = FAST.model_copy(update={"augment": ["shift:1", "noise:0.1"], "checkpoint_every_steps": 2})
    run = {"splits": splits, "cfg": cfg, "seed": 0, "cache_dir": tmp_path / "cache"}
    straight = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "a", **run)

    steps = LossCalls(monkeypatch, "hinton_loss", stop_at=10)  # mid epoch 2, after the step-8 checkpoint
    with pytest.raises(KeyboardInterrupt):
        distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    steps.count_from_zero()
    resumed = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    assert steps.calls == 3 * 7 - 8  # continued after the step-8 checkpoint
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for key, value in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[key], value), key
