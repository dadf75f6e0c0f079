"""Distillation: the loss, the teacher cache, the loop (resume, NaN stop, mismatches), the zoo."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from rich.progress import Progress
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgedistill.artifacts import sha256_file
from edgedistill.config import DataConfig, DistillConfig
from edgedistill.data import load_data
from edgedistill.distill import trainer
from edgedistill.distill.losses import hinton_loss
from edgedistill.distill.teacher_cache import teacher_logits
from edgedistill.distill.trainer import distill as _distill
from edgedistill.distill.trainer import evaluate
from edgedistill.errors import ModelMismatchError, UsageError
from edgedistill.zoo import digits_student, digits_teacher

# Untrained teachers score at chance, which distill() refuses (RELIABILITY 30, tests/test_teacher_check.py):
# these tests are about the training loop, so they allow it.
distill = functools.partial(_distill, allow_weak_teacher=True)

# ---------------------------------------------------------------- hinton_loss


def softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_hinton_loss_matches_a_hand_computation():
    s, t, temp, alpha = [1.0, 2.0, 0.0], [2.0, 1.0, 0.5], 2.0, 0.25
    p, q = softmax([a / temp for a in t]), softmax([a / temp for a in s])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    ce = -math.log(softmax(s)[2])
    loss = hinton_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([2]), temp, alpha)
    assert loss.kd.item() == pytest.approx(kl * temp**2, rel=1e-5)
    assert loss.ce.item() == pytest.approx(ce, rel=1e-5)
    assert loss.total.item() == pytest.approx((1 - alpha) * kl * temp**2 + alpha * ce, rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0, 8.0])
def test_kd_term_is_scaled_by_t_squared_and_averaged_over_the_batch(temp):
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    p, log_q = torch.softmax(t / temp, 1), torch.log_softmax(s / temp, 1)
    per_sample_kl = (p * (p.log() - log_q)).sum(1)
    kd = hinton_loss(s, t, None, temp, alpha=0.0).kd
    torch.testing.assert_close(kd, per_sample_kl.mean() * temp**2)


def test_alpha_extremes():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    only_kd, only_ce = hinton_loss(s, t, y, 4.0, alpha=0.0), hinton_loss(s, t, y, 4.0, alpha=1.0)
    torch.testing.assert_close(only_kd.total, only_kd.kd)
    torch.testing.assert_close(only_ce.total, nn.functional.cross_entropy(s, y))


def test_unlabelled_samples_count_in_kd_only():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    loss = hinton_loss(s, t, torch.tensor([-1, 2, -1]), 3.0, alpha=0.5)
    torch.testing.assert_close(loss.ce, nn.functional.cross_entropy(s[1:2], torch.tensor([2])))
    for labels in (torch.tensor([-1, -1, -1]), None):
        none = hinton_loss(s, t, labels, 3.0, alpha=0.5)
        assert none.ce.item() == 0.0
        torch.testing.assert_close(none.total, 0.5 * none.kd)
    none.total.backward()  # still trains on the teacher alone
    assert s.grad is not None and torch.isfinite(s.grad).all()


# ---------------------------------------------------------------- small synthetic task


class Counting(nn.Module):
    """Wraps a model and counts its forward calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def tiny_net(classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, classes)
    )


def tiny_splits(path, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(300) % 3
    x = rng.normal(size=(300, 1, 4, 4)).astype(np.float32) + y[:, None, None, None]
    np.savez(path, x=x, y=y)
    return load_data(DataConfig(spec=str(path)), seed=0)


@pytest.fixture
def splits(tmp_path):
    return tiny_splits(tmp_path / "d.npz")


FAST = DistillConfig(epochs=3, batch_size=32, lr=1e-2, threads=1)


def test_teacher_cache_hit_miss_and_invalidation(tmp_path, splits):
    teacher = Counting(tiny_net())
    first = teacher_logits(teacher, splits, tmp_path / "cache")
    assert teacher.calls > 0 and first.shape == (len(splits.x_train), 3)
    teacher.calls = 0
    torch.testing.assert_close(teacher_logits(teacher, splits, tmp_path / "cache"), first)
    assert teacher.calls == 0  # served from disk

    other_data = tiny_splits(tmp_path / "d2.npz", seed=1)
    teacher_logits(teacher, other_data, tmp_path / "cache")
    assert teacher.calls > 0

    teacher.calls = 0
    with torch.no_grad():
        teacher.model[-1].bias += 1  # new weights: the old logits no longer apply
    teacher_logits(teacher, splits, tmp_path / "cache")
    assert teacher.calls > 0


def test_damaged_cache_file_is_recomputed(tmp_path, splits):
    teacher = Counting(tiny_net())
    expected = teacher_logits(teacher, splits, tmp_path)
    (cached,) = tmp_path.glob("teacher-logits-*.safetensors")
    cached.write_bytes(b"garbage")
    teacher.calls = 0
    torch.testing.assert_close(teacher_logits(teacher, splits, tmp_path), expected)
    assert teacher.calls > 0


def test_distill_writes_weights_history_and_progress(tmp_path, splits):
    progress = Progress(disable=True)
    result = distill(
        tiny_net(seed=1),
        tiny_net(seed=2),
        splits,
        FAST,
        tmp_path / "run",
        seed=0,
        cache_dir=tmp_path / "cache",
        progress=progress,
    )
    assert result.weights_path == tmp_path / "run" / "student.safetensors" and result.weights_path.is_file()
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3] == [h["epoch"] for h in result.history]
    assert {"loss", "kd", "ce", "val_acc", "samples_per_s"} <= set(result.history[0])
    assert result.student_val_acc == max(h["val_acc"] for h in result.history)
    assert evaluate(result.student, splits.x_val, splits.y_val) == result.student_val_acc  # the best is kept
    assert len(progress.tasks) == 3 and "val top-1" in progress.tasks[-1].description
    assert not result.student.training


class LossCalls:
    """Patches trainer.<loss> to count its calls (one per step) and to raise KeyboardInterrupt at
    call `stop_at`; set stop_at None and calls 0 to count the steps of a resumed run."""

    def __init__(self, monkeypatch, loss, stop_at=None):
        self.real, self.calls, self.stop_at = getattr(trainer, loss), 0, stop_at
        monkeypatch.setattr(trainer, loss, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)

    def count_from_zero(self):
        self.calls, self.stop_at = 0, None


def test_interrupted_run_resumes_to_identical_losses_and_weights(tmp_path, splits, monkeypatch):
    """RELIABILITY 13: an interrupted run resumed from its checkpoint: identical losses and final weights."""
    run = {"splits": splits, "cfg": FAST, "seed": 0, "cache_dir": tmp_path / "cache"}
    straight = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "a", **run)

    steps = LossCalls(monkeypatch, "hinton_loss", stop_at=13)  # epoch 2 of 3 (7 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    assert not (tmp_path / "b" / "student.safetensors").exists()
    assert len((tmp_path / "b" / "history.jsonl").read_text().splitlines()) == 1
    steps.count_from_zero()
    resumed = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    assert steps.calls == 14  # epochs 2 and 3 only: epoch 1 came from the checkpoint

    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for key, value in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[key], value), key
    assert sha256_file(resumed.weights_path) == sha256_file(straight.weights_path)  # byte-identical


class TrainedAgain(Exception):
    pass


def refuse_to_train(*args, **kwargs):
    raise TrainedAgain


def test_finished_run_is_not_trained_again(tmp_path, splits, monkeypatch):
    run = {"splits": splits, "cfg": FAST, "out_dir": tmp_path / "run", "seed": 0, "cache_dir": tmp_path / "cache"}
    first = distill(tiny_net(seed=1), tiny_net(seed=2), **run)
    monkeypatch.setattr(trainer, "hinton_loss", refuse_to_train)
    again = distill(tiny_net(seed=1), tiny_net(seed=2), **run)
    assert again.history == first.history
    # other settings make another run, which trains (and here stops at its first step)
    with pytest.raises(TrainedAgain):
        distill(tiny_net(seed=1), tiny_net(seed=2), **{**run, "cfg": FAST.model_copy(update={"lr": 5e-3})})


class GoesNaN(nn.Module):
    """A student whose 10th training step (a forward with gradients) returns NaN."""

    def __init__(self):
        super().__init__()
        self.net, self.calls = tiny_net(seed=2), 0

    def forward(self, x):
        step = self.training and torch.is_grad_enabled()
        self.calls += step
        out = self.net(x)
        return out * float("nan") if step and self.calls == 10 else out


def test_nan_loss_stops_within_the_step_and_writes_no_checkpoint(tmp_path, splits):
    """RELIABILITY 14: the loss goes NaN at step 10: stopped within that step naming epoch, step and
    tensor; the checkpoint on disk stays finite and no weights are written."""
    out = tmp_path / "run"
    student = GoesNaN()
    with pytest.raises(UsageError, match=r"epoch 2/3, step 3: student logits not finite"):
        distill(tiny_net(seed=1), student, splits, FAST, out, seed=0, cache_dir=tmp_path / "cache")
    assert student.calls == 10  # stopped at once
    assert torch.isfinite(
        torch.load(out / "checkpoint.pt", weights_only=True)["student"]["net.4.weight"]
    ).all()
    assert not (out / "student.safetensors").exists()


def test_head_mismatch_is_refused_before_any_work(tmp_path, splits):
    """RELIABILITY 11: teacher head 1000 vs student 3: refused before the first step, naming both sizes;
    nothing written."""
    teacher = Counting(tiny_net(classes=1000))
    with pytest.raises(ModelMismatchError, match="teacher outputs 1000 classes, student outputs 3"):
        distill(teacher, tiny_net(), splits, FAST, tmp_path / "run", seed=0, cache_dir=tmp_path / "cache")
    assert teacher.calls == 1  # the one dummy forward of the check
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- the shipped models


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(), seed=0)


def test_shipped_teacher_reaches_97_percent_on_held_out_test(digits):
    assert evaluate(digits_teacher(), digits.x_test, digits.y_test) >= 0.97


def macs(model):
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 1, 32, 32))
    return counter.get_total_flops() / 2


def test_student_is_at_least_4x_cheaper():
    teacher, student = macs(digits_teacher(pretrained=False)), macs(digits_student())
    assert 100e6 <= teacher <= 160e6 and 15e6 <= student <= 25e6
    assert teacher / student >= 4


def test_two_epochs_of_the_zoo_student_from_the_shipped_teacher(tmp_path, digits):
    torch.manual_seed(0)
    cfg = DistillConfig(epochs=2)
    result = distill(
        digits_teacher(),
        digits_student(),
        digits,
        cfg,
        tmp_path / "run",
        seed=0,
        cache_dir=tmp_path / "cache",
    )
    assert result.teacher_val_acc >= 0.95
    assert result.student_val_acc > 0.85


# ---------------------------------------------------------------- feature (hint) distillation


def wide_net(classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, classes)
    )


def test_hint_loss_trains_an_adapter_and_is_checkpointed(tmp_path, splits):
    from edgedistill.config import FeaturePair

    cfg = FAST.model_copy(update={"features": [FeaturePair(student="2", teacher="2", weight=0.5)]})
    result = distill(wide_net(), tiny_net(seed=2), splits, cfg, tmp_path / "run", seed=0, cache_dir=tmp_path / "c")
    features = [r["feature"] for r in result.history]
    assert len(features) == 3 and features[-1] < features[0]  # the student's 4 channels learn the teacher's 8
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    (weight,) = [v for k, v in saved["adapters"].items() if k.endswith("weight")]
    assert tuple(weight.shape) == (8, 4, 1, 1)  # a 1x1 conv from 4 student to 8 teacher channels
    # The hint changes the run: another run key, so the logits-only checkpoint is not reused.
    plain = distill(wide_net(), tiny_net(seed=2), splits, FAST, tmp_path / "plain", seed=0, cache_dir=tmp_path / "c")
    assert "feature" not in plain.history[0]
    assert not torch.equal(result.student[0].weight, plain.student[0].weight)


def test_a_feature_path_that_does_not_exist_fails_before_training(tmp_path, splits):
    from edgedistill.config import FeaturePair

    cfg = FAST.model_copy(update={"features": [FeaturePair(student="body.3", teacher="2")]})
    with pytest.raises(UsageError, match="no module 'body.3' in the student; valid paths"):
        distill(wide_net(), tiny_net(seed=2), splits, cfg, tmp_path / "run", seed=0, cache_dir=tmp_path / "c")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
