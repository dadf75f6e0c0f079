"""The training loop: gradient clipping, early stopping, the teacher cache bypass, TensorBoard."""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch
from test_distill import FAST, Counting, tiny_net, tiny_splits
from torch.optim.optimizer import register_optimizer_step_pre_hook

from edgedistill.distill.trainer import distill as _distill
from edgedistill.distill.trainer import evaluate

# Untrained teachers score at chance, which distill() refuses (RELIABILITY 30, tests/test_teacher_check.py):
# these tests are about the training loop, so they allow it.
distill = functools.partial(_distill, allow_weak_teacher=True)


@pytest.fixture
def splits(tmp_path):
    return tiny_splits(tmp_path / "d.npz")


def run(tmp_path, splits, cfg, name="run", teacher=None, **kwargs):
    return distill(
        teacher or tiny_net(seed=1), tiny_net(seed=2), splits, cfg, tmp_path / name,
        seed=0, cache_dir=tmp_path / "cache", **kwargs,
    )


@pytest.fixture
def step_grad_norms():
    """The global gradient norm each optimizer step is taken with (after any clipping)."""
    norms = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.nn.utils.get_total_norm(grads)))

    handle = register_optimizer_step_pre_hook(hook)
    yield norms
    handle.remove()


def test_clipping_bounds_the_gradient_norm(tmp_path, splits, step_grad_norms):
    unclipped_cfg = FAST.model_copy(update={"grad_clip_norm": None, "epochs": 1})
    unclipped = run(tmp_path, splits, unclipped_cfg, "free")
    assert max(step_grad_norms) > 0.05
    assert unclipped.history[0]["grad_norm_max"] == pytest.approx(max(step_grad_norms), rel=1e-5)

    step_grad_norms.clear()
    clipped = run(tmp_path, splits, unclipped_cfg.model_copy(update={"grad_clip_norm": 0.05}), "clip")
    assert len(step_grad_norms) == 7 and max(step_grad_norms) <= 0.05 * (1 + 1e-5)
    assert clipped.history[0]["grad_norm_max"] > 0.05  # recorded before clipping: it did bite


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, splits):
    # An lr so small the weights cannot move: validation accuracy stays at its epoch-1 value.
    frozen = FAST.model_copy(update={"epochs": 8, "lr": 1e-12})
    for patience in (1, 3):
        result = run(tmp_path, splits, frozen.model_copy(update={"patience": patience}), f"p{patience}")
        assert len(result.history) == 1 + patience and result.stopped_early
        assert result.history[-1]["stopped_early"] is True
        assert all("stopped_early" not in h for h in result.history[:-1])
        assert result.student_val_acc == result.history[0]["val_acc"]
        assert evaluate(result.student, splits.x_val, splits.y_val) == result.student_val_acc

    full = run(tmp_path, splits, frozen, "none")  # patience None: every epoch
    assert len(full.history) == 8 and not full.stopped_early


def test_early_stopped_run_is_not_resumed_into_more_epochs(tmp_path, splits, monkeypatch):
    cfg = FAST.model_copy(update={"epochs": 8, "lr": 1e-12, "patience": 1})
    first = run(tmp_path, splits, cfg)
    notes = []
    again = run(tmp_path, splits, cfg, notify=notes.append)
    assert again.history == first.history and again.stopped_early
    assert notes and notes[0].startswith("already trained")


def test_teacher_cache_on_and_off_train_the_same_student(tmp_path, splits):
    cached_teacher, live_teacher = Counting(tiny_net(seed=1)), Counting(tiny_net(seed=1))
    cached = run(tmp_path, splits, FAST, "cached", teacher=cached_teacher)
    live = run(tmp_path, splits, FAST.model_copy(update={"cache_teacher": False}), "live", teacher=live_teacher)
    # The live teacher runs once per training step (3 epochs x 7) on top of the checks and
    # validation both runs do; the cached one ran once over the whole training set.
    assert live_teacher.calls - cached_teacher.calls == 3 * 7 - 1
    # Not bit-identical: the cache computes logits in batches of 256, the live teacher in the
    # training batches of 32, and a conv's float sums depend on the batch blocking (last-bit
    # differences). Equal to float tolerance all the same.
    for a, b in zip(cached.history, live.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_acc"] == b["val_acc"]
    for key, value in cached.student.state_dict().items():
        torch.testing.assert_close(live.student.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_without_tensorboard_the_run_works_and_writes_no_logs(tmp_path, splits, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as when absent
    with pytest.raises(ImportError):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    result = run(tmp_path, splits, FAST.model_copy(update={"epochs": 1}))
    assert result.weights_path.is_file() and not (tmp_path / "run" / "tensorboard").exists()


def test_with_tensorboard_each_epoch_is_logged(tmp_path, splits, monkeypatch):
    writers = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir, self.scalars, self.closed = log_dir, [], False
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    result = run(tmp_path, splits, FAST)
    (writer,) = writers
    assert writer.log_dir == str(tmp_path / "run" / "tensorboard") and writer.closed
    losses = [(step, value) for tag, value, step in writer.scalars if tag == "distill/loss"]
    assert losses == [(h["epoch"], h["loss"]) for h in result.history]
    assert {"distill/val_acc", "distill/samples_per_s", "distill/lr"} <= {t for t, _, _ in writer.scalars}
