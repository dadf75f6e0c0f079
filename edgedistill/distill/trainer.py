"""The distillation loop: a student learns the teacher's softened outputs (plus the labels it has).

Deterministic on CPU: seeded init of the RNGs, a seeded generator for shuffling, deterministic
algorithms. After every epoch the complete training state (student, best student, optimizer,
scheduler, both RNGs, history) is written atomically to out_dir/checkpoint.pt; a later call
with the same teacher, student, data and settings resumes from it and produces the same losses
and weights as an uninterrupted run, and a finished run is not trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save
from torch import nn

from edgedistill.artifacts import atomic_write_bytes, atomic_write_text
from edgedistill.config import DistillConfig
from edgedistill.data import DataSplits
from edgedistill.distill.losses import KDLoss, hinton_loss
from edgedistill.distill.teacher_cache import model_digest, predict, teacher_logits
from edgedistill.errors import UsageError
from edgedistill.specs import check_compatible, set_mode

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["DistillResult", "distill", "evaluate", "predict"]

WEIGHTS_FILE = "student.safetensors"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
MAX_WARMUP_STEPS = 100


@dataclass
class DistillResult:
    student: nn.Module  # the best-on-validation weights, in eval mode
    weights_path: Path
    history: list[dict]  # per epoch: epoch, loss, kd, ce, val_acc, lr, samples_per_s
    teacher_val_acc: float
    student_val_acc: float


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (predict(model, x, batch_size).argmax(dim=1) == y).float().mean().item()


def distill(
    teacher: nn.Module,
    student: nn.Module,
    splits: DataSplits,
    cfg: DistillConfig,
    out_dir: Path,
    *,
    seed: int,
    cache_dir: Path,
    progress: Progress | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> DistillResult:
    """Train `student` on the teacher's logits for splits.x_train; keep the best on validation.

    `progress` shows live bars on a terminal; `on_epoch` gets each epoch's record (plain log lines
    in CI). Writes out_dir/student.safetensors (the best student), history.jsonl and checkpoint.pt.
    """
    out_dir = Path(out_dir)
    check_compatible(teacher, student, splits.input_shape, splits.num_classes)
    with _training_settings(cfg.threads):
        soft_targets = teacher_logits(teacher, splits, cache_dir)
        teacher_val = evaluate(teacher, splits.x_val, splits.y_val)
        state = _TrainingState(
            student, cfg, seed, len(splits.x_train), _run_key(teacher, student, splits, cfg, seed)
        )
        state.resume(out_dir / CHECKPOINT_FILE)
        while state.epoch < cfg.epochs:
            record = _train_epoch(state, splits, soft_targets, cfg, progress)
            state.end_epoch(record)
            if on_epoch:
                on_epoch(record)
            atomic_write_text(out_dir / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in state.history))
            state.save(out_dir / CHECKPOINT_FILE)
    student.load_state_dict(state.best)
    set_mode(student, training=False)
    weights_path = out_dir / WEIGHTS_FILE
    # One metadata key: safetensors writes several in random order, and equal weights should
    # give equal bytes (stage caches compare file hashes).
    meta = json.dumps({"val_acc": state.best_val, "seed": seed, "run_key": state.key}, sort_keys=True)
    atomic_write_bytes(weights_path, save(_contiguous(state.best), metadata={"edgedistill": meta}))
    return DistillResult(student, weights_path, state.history, teacher_val, state.best_val)


class _TrainingState:
    """Everything an interrupted run needs to continue exactly where it stopped."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, seed: int, n_train: int, key: str):
        self.student, self.key = student, key
        self.steps_per_epoch = len(_batches(torch.arange(n_train), cfg.batch_size))
        total = self.steps_per_epoch * cfg.epochs
        warmup = max(1, min(MAX_WARMUP_STEPS, total // 10))
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, warmup, total)
        )
        torch.manual_seed(seed)  # for anything random inside the student (dropout)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.epoch, self.history = 0, []
        self.best, self.best_val = _clone(student.state_dict()), -1.0

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self.epoch += 1
        if record["val_acc"] > self.best_val:
            self.best, self.best_val = _clone(self.student.state_dict()), record["val_acc"]

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "key": self.key,
                "epoch": self.epoch,
                "history": self.history,
                "student": self.student.state_dict(),
                "best": self.best,
                "best_val": self.best_val,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "shuffle_rng": self.shuffle.get_state(),
            },
            buffer,
        )
        atomic_write_bytes(path, buffer.getvalue())

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint of this very run; anything else there is ignored."""
        if not path.is_file():
            return
        try:
            saved = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # noqa: BLE001 -- unreadable: start over; replaced after the first epoch
            return
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return
        self.student.load_state_dict(saved["student"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.shuffle.set_state(saved["shuffle_rng"])
        self.epoch, self.history = saved["epoch"], saved["history"]
        self.best, self.best_val = saved["best"], saved["best_val"]


def _train_epoch(
    state: _TrainingState,
    splits: DataSplits,
    soft_targets: torch.Tensor,
    cfg: DistillConfig,
    progress: Progress | None,
) -> dict[str, Any]:
    student, label = state.student, f"epoch {state.epoch + 1}/{cfg.epochs}"
    task = progress.add_task(label, total=state.steps_per_epoch) if progress else None
    labels = splits.y_train
    sums, seen, start = {"loss": 0.0, "kd": 0.0, "ce": 0.0}, 0, time.perf_counter()
    set_mode(student, training=True)
    batches = _batches(torch.randperm(len(splits.x_train), generator=state.shuffle), cfg.batch_size)
    for step, idx in enumerate(batches, start=1):
        batch_labels = labels[idx] if labels is not None else None
        loss = _step(
            state, splits.x_train[idx], soft_targets[idx], batch_labels, cfg, f"{label}, step {step}"
        )
        for name, value in zip(("loss", "kd", "ce"), loss, strict=True):
            sums[name] += value.item() * len(idx)
        seen += len(idx)
        if progress:
            progress.update(task, advance=1, description=f"{label} loss {sums['loss'] / seen:.4f}")
    seconds = time.perf_counter() - start  # optimisation only: samples_per_s compares runs
    _recalibrate_batchnorm(student, splits.x_train, cfg.batch_size)
    record = {"epoch": state.epoch + 1, **{k: v / seen for k, v in sums.items()}}
    record.update(val_acc=evaluate(student, splits.x_val, splits.y_val), lr=state.scheduler.get_last_lr()[0])
    record.update(samples_per_s=seen / seconds, seconds=seconds)
    if progress:
        progress.update(
            task, description=f"{label} loss {record['loss']:.4f} val acc {record['val_acc']:.2%}"
        )
    return record


def _step(
    state: _TrainingState,
    x: torch.Tensor,
    soft_targets: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: DistillConfig,
    where: str,
) -> KDLoss:
    logits = state.student(x)
    loss = hinton_loss(logits, soft_targets, labels, cfg.temperature, cfg.alpha)
    _stop_if_not_finite(loss, logits, soft_targets, where)
    state.optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    state.optimizer.step()
    state.scheduler.step()
    return loss


def _recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Re-estimate BatchNorm running statistics for the weights the epoch ended with.

    The running averages trail the weights by many steps; on a short schedule (a small data
    set, a few epochs) they stay far from the final batch statistics, and the eval-mode model
    (the one validated, exported and benchmarked) is much worse than the one trained: seen at
    10 % vs 67 % validation accuracy after one epoch on digits. A no-grad pass over the
    training set with a cumulative average fixes that ("precise BN").
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average over all batches of this pass
    with torch.no_grad():
        for batch in x.split(batch_size):
            model(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def _stop_if_not_finite(loss: KDLoss, logits: torch.Tensor, targets: torch.Tensor, where: str) -> None:
    """Stop before a NaN/Inf reaches the weights; name the first tensor that went bad."""
    if bool(torch.isfinite(loss.total)):
        return
    suspects = {"student logits": logits, "teacher logits": targets, "kd loss": loss.kd, "ce loss": loss.ce}
    culprit = next((name for name, t in suspects.items() if not bool(torch.isfinite(t).all())), "loss")
    raise UsageError(
        f"distillation stopped at {where}: {culprit} not finite (loss {loss.total.item()}); "
        "no checkpoint written for this epoch",
        "lower distill.lr, or check the data and the teacher for extreme values",
    )


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(order.split(batch_size))
    # BatchNorm cannot normalise a single sample in training mode; the next shuffle covers it.
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up (large steps on random init destabilise BatchNorm), then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _run_key(
    teacher: nn.Module, student: nn.Module, splits: DataSplits, cfg: DistillConfig, seed: int
) -> str:
    """Identity of a run: a checkpoint is resumed only by the same inputs and settings."""
    settings = cfg.model_dump(mode="json", exclude={"threads"})  # threads change speed, not results
    parts = [
        model_digest(teacher),
        model_digest(student),
        splits.fingerprint,
        json.dumps(settings, sort_keys=True),
        str(seed),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@contextlib.contextmanager
def _training_settings(threads: int | None) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads:
        torch.set_num_threads(threads)
    # warn_only: a user's model may use an op with no deterministic CPU kernel; train anyway.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in state.items()}
