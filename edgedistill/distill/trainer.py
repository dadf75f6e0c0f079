"""The distillation loop: a student learns the teacher's softened outputs (plus the labels it has).

Deterministic on CPU: seeded init of the RNGs, a seeded generator for shuffling, deterministic
algorithms. After every epoch, and every `checkpoint_every_steps` optimizer steps, the complete
training state (student, best student, optimizer, scheduler, the epoch's shuffle order and the
position in it, the epoch's running metric sums, every RNG: torch, python, numpy, history) is
written atomically to out_dir/checkpoint.pt; a later call with the same teacher, student, data
and settings resumes from it at the very next batch and produces the same losses and weights as
an uninterrupted run, and a finished run is not trained again.

Data-parallel (a World of several processes, see world.py): every rank walks the same global
batches and trains on its own slice of each, DistributedDataParallel averages the gradients, and
each rank's loss is weighted by its share of the batch, so a step is the step one process would
take on the whole batch (up to float rounding, and BatchNorm's per-slice statistics). The batch
size, the number of steps and the schedule do not depend on the number of processes. Rank 0
alone writes files; a checkpoint holds every rank's RNG states.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from edgedistill.artifacts import atomic_write_bytes, atomic_write_text
from edgedistill.config import DistillConfig
from edgedistill.data import DataSplits
from edgedistill.data.inputs import Inputs, count, run, split, take
from edgedistill.distill.augment import build_augment
from edgedistill.distill.defaults import resolve as resolve_defaults
from edgedistill.distill.features import FeatureAdapters, FeatureTaps, build_adapters
from edgedistill.distill.losses import embedding_loss, feature_loss, hinton_loss
from edgedistill.distill.objectives import (
    AGREEMENT, NO_LABELS_NOTE, Validator, check_models, check_teacher_score, evaluate,
)
from edgedistill.distill.teacher_cache import model_digest, predict, teacher_logits
from edgedistill.distill.world import SINGLE, World
from edgedistill.errors import UsageError
from edgedistill.specs import set_mode

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["DistillResult", "distill", "evaluate", "predict"]

WEIGHTS_FILE = "student.safetensors"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
MAX_WARMUP_STEPS = 100
# Settings that decide when state is saved or reused, never what is learned.
BOOKKEEPING_SETTINGS = frozenset({"checkpoint_every_steps", "restart"})
LOSS_TERMS = ("loss", "kd", "ce", "mse", "cosine", "feature")  # the per-sample means an epoch record carries


@dataclass
class DistillResult:
    student: nn.Module  # the best-on-validation weights, in eval mode
    weights_path: Path
    history: list[dict]  # per epoch: epoch, loss, kd, ce (or mse, cosine), val_acc (or val_cosine), lr, ...
    teacher_val_acc: float | None  # None for objective="embedding": no classes to be right about
    student_val_acc: float | None
    stopped_early: bool = False  # patience ran out before cfg.epochs
    student_val_cosine: float | None = None  # objective="embedding": mean cosine to the teacher
    # objective="logits" on data without labels: top-1 agreement with the teacher (val_acc None)
    student_val_agreement: float | None = None


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
    notify: Callable[[str], None] | None = None,
    world: World = SINGLE,
    allow_weak_teacher: bool = False,
) -> DistillResult:
    """Train `student` on the teacher's logits for splits.x_train; keep the best on validation.

    `progress` shows live bars on a terminal; `on_epoch` gets each epoch's record (plain log lines
    in CI); `notify` gets one-off messages (where a resumed run continues). Writes
    out_dir/student.safetensors (the best student), history.jsonl, checkpoint.pt and, when
    TensorBoard is installed, out_dir/tensorboard. In a World of several processes every rank
    calls this; only rank 0 writes, and only rank 0 should be given progress/on_epoch/notify.

    A classifier teacher at or near chance on the validation split stops the run before the
    first step (exit 2) unless `allow_weak_teacher` (see objectives.check_teacher_score).
    """
    out_dir = Path(out_dir)
    # api.distill resolves (and logs) these before its stage key; a direct caller may leave them out.
    cfg = resolve_defaults(cfg, student)[0]
    check_models(cfg.objective, teacher, student, splits)
    if cfg.batch_size < 2 * world.size:
        raise UsageError(
            f"distill.batch_size {cfg.batch_size} is too small for {world.size} processes: "
            f"each trains on a slice of every batch and BatchNorm needs 2 samples, so at least {2 * world.size}",
            "raise distill.batch_size or use fewer processes",
        )
    augment = build_augment(cfg.augment)
    if augment is not None:
        augment(splits.sample)  # a spec that does not fit the data fails here, before any step
    with _training_settings(cfg.threads), contextlib.ExitStack() as taps:
        # Hint losses need the teacher's inner features, and augmented inputs the teacher's
        # outputs on them: only a live teacher gives either.
        live = bool(cfg.features) or augment is not None
        if cfg.cache_teacher and live and notify:
            notify("teacher runs on every batch: " + ("augmentation changes the inputs" if augment else
                                                      "hint losses need its inner features"))
        validator = Validator(cfg.objective, teacher, splits)  # before the taps: they would catch its pass
        if validator.name == AGREEMENT and notify:
            notify(NO_LABELS_NOTE)
        # Built before the first step, so a wrong module path or shape fails up front (exit 2).
        make_adapters = (
            functools.partial(build_adapters, student, teacher, cfg.features, splits.sample)
            if cfg.features else None
        )
        key = _run_key(teacher, student, splits, cfg, seed)
        if len(set(world.gather(key))) > 1:  # e.g. a factory without weights draws a new teacher per rank
            raise UsageError(
                "the processes of this run do not agree on the teacher, student or data "
                "(their digests differ between ranks)",
                "give the teacher a weights file and load the same data on every node",
            )
        state = _TrainingState(student, cfg, seed, count(splits.x_train), key, make_adapters, world)
        state.validator, state.augment = validator, augment
        if state.adapters is not None:
            state.taps = (
                taps.enter_context(FeatureTaps(student, [p.student for p in cfg.features], role="student")),
                taps.enter_context(FeatureTaps(teacher, [p.teacher for p in cfg.features], role="teacher")),
            )
        # After the checks of the settings (a wrong feature path is named first), before the
        # teacher cache is filled and before a checkpoint is resumed: fresh and resumed runs alike.
        _check_teacher(validator, splits, world, allow_weak_teacher)
        with world.main_first():  # rank 0 fills the on-disk cache, the others read it
            targets = _TeacherTargets(teacher, splits, cache_dir, cfg.cache_teacher and not live)
        checkpoint = out_dir / CHECKPOINT_FILE
        if world.main:
            _remove_torn_checkpoints(checkpoint)
        if not cfg.restart and state.resume(checkpoint) and notify:
            notify(
                f"resuming from epoch {state.epoch + 1} step {state.step} ({checkpoint})"
                if state.running
                else f"already trained ({checkpoint}); --restart trains again"
            )
        board = _open_tensorboard(out_dir / "tensorboard") if state.running and world.main else None
        try:
            while state.running:
                record = _train_epoch(state, splits, targets, cfg, progress, checkpoint)
                for tap in state.taps:  # validation and BN passes captured features too
                    tap.clear()
                state.end_epoch(record)
                if on_epoch:
                    on_epoch(record)
                if board is not None:
                    _log_scalars(board, record)
                # Written as each epoch ends, so a long run can be followed (tail -f) while it trains.
                if world.main:
                    atomic_write_text(out_dir / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in state.history))
                state.save(checkpoint)
        finally:
            if board is not None:
                board.close()
    student.load_state_dict(state.best)
    set_mode(student, training=False)
    weights_path = out_dir / WEIGHTS_FILE
    # One metadata key: safetensors writes several in random order, and equal weights should
    # give equal bytes (stage caches compare file hashes).
    meta = json.dumps({validator.name: state.best_val, "seed": seed, "run_key": state.key}, sort_keys=True)
    if world.main:
        atomic_write_bytes(weights_path, save(_contiguous(state.best), metadata={"edgedistill": meta}))
    if cfg.objective == "embedding":
        return DistillResult(student, weights_path, state.history, None, None, state.stopped_early,
                             student_val_cosine=state.best_val)
    if validator.name == AGREEMENT:
        return DistillResult(student, weights_path, state.history, None, None, state.stopped_early,
                             student_val_agreement=state.best_val)
    return DistillResult(student, weights_path, state.history, validator.teacher_score, state.best_val,
                         state.stopped_early)


def _check_teacher(validator: Validator, splits: DataSplits, world: World, allow: bool) -> None:
    """Stop before the first step (fresh or resumed) when the teacher is at chance on validation.

    Runs on every call, so a resumed run is checked too. Rank 0's score decides for every rank:
    all ranks then raise the same error together, and none waits in a collective for a rank that
    left (thread counts may differ per rank, and a near-tie argmax with them).
    For objective="embedding" nothing is checked: there are no classes, so no chance level; a
    broken embedding teacher shows only as a low student cosine.
    """
    if validator.teacher_score is None:
        return
    validator.teacher_score = world.broadcast(validator.teacher_score)
    check_teacher_score(validator.teacher_score, splits.num_classes, len(splits.y_val), allow=allow)


class _TeacherTargets:
    """The teacher's logits for a batch: from the cache of the whole training set, or live.

    Live (cache_teacher=False) runs the teacher on each batch in eval mode without gradients:
    slower by a teacher forward per step, but right for inputs that change between epochs.
    """

    def __init__(self, teacher: nn.Module, splits: DataSplits, cache_dir: Path, cached: bool):
        self.teacher = teacher
        self.cached = teacher_logits(teacher, splits, cache_dir) if cached else None

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[idx]
        return predict(self.teacher, x, batch_size=count(x))


class _TrainingState:
    """Everything an interrupted run needs to continue exactly where it stopped."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, seed: int, n_train: int, key: str,
                 make_adapters: Callable[[], FeatureAdapters] | None = None, world: World = SINGLE):
        self.student, self.key, self.world = student, key, world
        _seed_all(seed)
        # After seeding: adapter weights are drawn from the RNG, and a resumed run must match.
        self.adapters = make_adapters() if make_adapters else None
        if world.distributed:
            # Weights are equal on every rank (same seed); dropout masks should differ per rank.
            _seed_all(seed + world.rank)
            # Wraps the student for the forward pass; state.student stays the plain module.
            self.model = torch.nn.parallel.DistributedDataParallel(student)
        else:
            self.model = student
        self.taps: tuple[FeatureTaps, ...] = ()  # (student, teacher) while hint losses are on
        self.validator: Validator | None = None  # set by distill(): the score best/early stopping follow
        self.augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # set by distill()
        self.trainable = [*student.parameters(), *(self.adapters.parameters() if self.adapters else ())]
        self.steps_per_epoch = len(_batches(torch.arange(n_train), cfg.batch_size, world.size))
        total = self.steps_per_epoch * cfg.epochs
        warmup = max(1, min(MAX_WARMUP_STEPS, total // 10))
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, warmup, total)
        )
        self.epochs, self.patience = cfg.epochs, cfg.patience
        self.every = cfg.checkpoint_every_steps
        self.shuffle = torch.Generator().manual_seed(seed)
        self.epoch, self.history = 0, []
        self.best, self.best_val, self.best_epoch = _clone(student.state_dict()), -1.0, 0
        self.stopped_early = False
        self.begin_epoch()

    @property
    def running(self) -> bool:
        return self.epoch < self.epochs and not self.stopped_early

    def begin_epoch(self) -> None:
        """Position at the start of an epoch; the order is drawn lazily by epoch_order()."""
        self.order: torch.Tensor | None = None
        self.step, self.sums, self.seen, self.seconds = 0, {}, 0, 0.0

    def epoch_order(self, n: int) -> torch.Tensor:
        # Drawn once per epoch and checkpointed, so a mid-epoch resume walks the same order.
        if self.order is None:
            self.order = torch.randperm(n, generator=self.shuffle)
        return self.order

    def save_due(self) -> bool:
        """A mid-epoch checkpoint is due after this optimizer step (the epoch's end saves anyway)."""
        done = self.scheduler.last_epoch  # optimizer steps taken so far in the whole run
        return bool(self.every) and done % self.every == 0 and self.step < self.steps_per_epoch

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.epoch += 1
        score = record[self.validator.name]
        if score > self.best_val:
            self.best, self.best_val = _clone(self.student.state_dict()), score
            self.best_epoch = self.epoch
        if self.patience and self.epoch < self.epochs and self.epoch - self.best_epoch >= self.patience:
            self.stopped_early = True
            record["stopped_early"] = True
        self.history.append(record)
        self.begin_epoch()

    def save(self, path: Path) -> None:
        """Rank 0 writes the state; every rank must call this (it collects their RNG states)."""
        rngs = self.world.gather(_rng_state())
        if not self.world.main:
            return
        buffer = io.BytesIO()
        torch.save(
            {
                "key": self.key,
                "epoch": self.epoch,
                "step": self.step,  # optimizer steps done within this epoch
                "order": self.order,  # this epoch's shuffle (None at an epoch boundary)
                "sums": self.sums,
                "seen": self.seen,
                "seconds": self.seconds,
                "history": self.history,
                "stopped_early": self.stopped_early,
                "student": self.student.state_dict(),
                "adapters": self.adapters.state_dict() if self.adapters is not None else None,
                "best": self.best,
                "best_val": self.best_val,
                "best_epoch": self.best_epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "shuffle_rng": self.shuffle.get_state(),  # the same on every rank
                "rngs": rngs,  # per rank: torch, python, numpy
            },
            buffer,
        )
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as e:  # a full disk, a quota: the rename never happened
            raise UsageError(
                f"could not write the checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                "is intact and a rerun resumes from it",
                "free space on that disk, or set [run] out_dir to another one",
            ) from e

    def resume(self, path: Path) -> bool:
        """Continue from a checkpoint of this very run; anything else there is ignored.

        Rank 0 reads it and sends it to the others, so other nodes need no shared disk.
        """
        saved = self.world.broadcast(_read_checkpoint(path) if self.world.main else None)
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return False
        self.student.load_state_dict(saved["student"])
        if self.adapters is not None:
            self.adapters.load_state_dict(saved["adapters"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.shuffle.set_state(saved["shuffle_rng"])
        # Batches are global, so a run may resume on another number of processes; each rank then
        # keeps its fresh per-rank seeds, as the saved ones belong to other slices of the data.
        if len(saved["rngs"]) == self.world.size:
            _set_rng_state(saved["rngs"][self.world.rank])
        self.epoch, self.history = saved["epoch"], saved["history"]
        self.step, self.order, self.sums = saved["step"], saved["order"], saved["sums"]
        self.seen, self.seconds = saved["seen"], saved["seconds"]
        self.best, self.best_val, self.best_epoch = saved["best"], saved["best_val"], saved["best_epoch"]
        self.stopped_early = saved["stopped_early"]
        return True


def _train_epoch(
    state: _TrainingState,
    splits: DataSplits,
    targets: _TeacherTargets,
    cfg: DistillConfig,
    progress: Progress | None,
    checkpoint: Path,
) -> dict[str, Any]:
    """Train the rest of the current epoch (all of it unless resumed mid-epoch); its record."""
    student, label, world = state.student, f"epoch {state.epoch + 1}/{cfg.epochs}", state.world
    task = progress.add_task(label, total=state.steps_per_epoch, completed=state.step) if progress else None
    labels = splits.y_train
    set_mode(student, training=True)
    batches = _batches(state.epoch_order(count(splits.x_train)), cfg.batch_size, world.size)
    for step in range(state.step, len(batches)):
        start = time.perf_counter()
        idx = batches[step][world.rank :: world.size]  # this rank's slice of the global batch
        x = take(splits.x_train, idx)
        if state.augment is not None:
            x = state.augment(x)
        batch_labels = labels[idx] if labels is not None else None
        # Teacher time counts in samples/s: that is what the cache saves.
        share = len(idx) * world.size / len(batches[step])  # 1 unless the slices are uneven
        loss, grad_norm = _step(state, x, targets(idx, x), batch_labels, cfg, f"{label}, step {step + 1}", share)
        for name, value in loss.items():
            state.sums[name] = state.sums.get(name, 0.0) + value * len(idx)
        state.sums["grad_norm_max"] = max(state.sums.get("grad_norm_max", 0.0), grad_norm)
        state.seen += len(idx)
        state.step = step + 1
        state.seconds += time.perf_counter() - start  # optimisation only: samples_per_s compares runs
        if progress:
            progress.update(task, advance=1, description=f"{label} loss {state.sums['loss'] / state.seen:.4f}, "
                                                         f"{state.seen * world.size / state.seconds:.0f} samples/s")
        if state.save_due():
            state.save(checkpoint)
    _recalibrate_batchnorm(student, splits.x_train, cfg.batch_size)
    # The gradient norm is the same on every rank (taken after averaging); sample counts add up.
    sums = world.sum({**{k: v for k, v in state.sums.items() if k != "grad_norm_max"}, "seen": state.seen})
    seen = sums.pop("seen")
    record = {"epoch": state.epoch + 1, **{k: sums[k] / seen for k in LOSS_TERMS if k in sums}}
    record[state.validator.name] = state.validator(student)
    record.update(lr=state.scheduler.get_last_lr()[0])
    # The largest gradient norm before clipping: how often and how far clipping bit.
    record.update(grad_norm_max=state.sums["grad_norm_max"])
    record.update(samples_per_s=seen / state.seconds, seconds=state.seconds)
    if progress:
        progress.update(
            task,
            description=f"{label} loss {record['loss']:.4f} {state.validator.describe(record[state.validator.name])}",
        )
    return record


def _step(
    state: _TrainingState,
    x: Inputs,
    soft_targets: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: DistillConfig,
    where: str,
    share: float = 1.0,
) -> tuple[dict[str, float], float]:
    """One optimizer step; the loss terms and the gradient norm before clipping.

    `share` weighs this rank's mean loss by its slice of the global batch, so the averaged
    gradient is that of the whole batch's mean loss.
    """
    logits = run(state.model, x)
    total, parts = _objective_loss(logits, soft_targets, labels, cfg)
    hint = None
    if state.adapters is not None:  # the taps caught the student's and the live teacher's features
        student_taps, teacher_taps = state.taps
        hint = feature_loss(student_taps.outputs, teacher_taps.outputs, state.adapters).total
        total = total + hint
    _stop_if_not_finite(total, parts, logits, soft_targets, where, cfg.objective)
    state.optimizer.zero_grad(set_to_none=True)
    (total * share if share != 1.0 else total).backward()
    if state.adapters is not None:  # DistributedDataParallel averages the student's gradients only
        state.world.average_gradients(list(state.adapters.parameters()))
    for tap in state.taps:
        tap.clear()  # the captured features hold this step's graph
    params = [p for p in state.trainable if p.grad is not None]
    if cfg.grad_clip_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm))
    else:
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0
    state.optimizer.step()
    state.scheduler.step()
    terms = {"loss": total.item(), **{name: value.item() for name, value in parts.items()}}
    if hint is not None:
        terms["feature"] = hint.item()
    return terms, norm


def _objective_loss(
    outputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None, cfg: DistillConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output loss for cfg.objective and its named terms (LOSS_TERMS keys)."""
    if cfg.objective == "embedding":  # labels unused: the teacher's vectors are the only target
        emb = embedding_loss(outputs, targets, cfg.embedding_mse_weight, cfg.embedding_cosine_weight)
        return emb.total, {"mse": emb.mse, "cosine": emb.cosine}
    loss = hinton_loss(outputs, targets, labels, cfg.temperature, cfg.alpha)
    return loss.total, {"kd": loss.kd, "ce": loss.ce}


def _recalibrate_batchnorm(model: nn.Module, x: Inputs, batch_size: int) -> None:
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
        for batch in split(x, batch_size):
            run(model, batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def _stop_if_not_finite(
    total: torch.Tensor, parts: dict[str, torch.Tensor], logits: torch.Tensor, targets: torch.Tensor,
    where: str, objective: str = "logits",
) -> None:
    """Stop before a NaN/Inf reaches the weights; name the first tensor that went bad."""
    if bool(torch.isfinite(total)):
        return
    kind = "embeddings" if objective == "embedding" else "logits"
    suspects = {f"student {kind}": logits, f"teacher {kind}": targets, **{f"{k} loss": v for k, v in parts.items()}}
    culprit = next((name for name, t in suspects.items() if not bool(torch.isfinite(t).all())), "loss")
    raise UsageError(
        f"distillation stopped at {where}: {culprit} not finite (loss {total.item()}); "
        "no checkpoint written for this epoch",
        "lower distill.lr, or check the data and the teacher for extreme values",
    )


def _batches(order: torch.Tensor, batch_size: int, ranks: int = 1) -> list[torch.Tensor]:
    """The global batches of an epoch; each of `ranks` processes trains on a slice of each."""
    batches = list(order.split(batch_size))
    # BatchNorm cannot normalise a single sample in training mode, so every rank's slice of the
    # last batch needs two; the next shuffle covers the samples dropped.
    if len(batches) > 1 and len(batches[-1]) < 2 * ranks:
        batches.pop()
    return batches


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up (large steps on random init destabilise BatchNorm), then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _open_tensorboard(log_dir: Path) -> Any:
    """A TensorBoard SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # an optional extra: history.jsonl has the same figures
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _log_scalars(board: Any, record: dict[str, Any]) -> None:
    for name, value in record.items():
        if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            board.add_scalar(f"distill/{name}", value, record["epoch"])
    board.flush()


def _run_key(
    teacher: nn.Module, student: nn.Module, splits: DataSplits, cfg: DistillConfig, seed: int
) -> str:
    """Identity of a run: a checkpoint is resumed only by the same inputs and settings."""
    # Threads change speed, not results: a checkpoint made with other threads stays valid.
    settings = cfg.model_dump(mode="json", exclude={"threads", *BOOKKEEPING_SETTINGS})
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


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)  # for anything random inside the student (dropout)
    # Python's and numpy's RNGs are seeded too: a user's model or loss may draw from them.
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as plain containers and tensors, so loading stays weights_only."""
    numpy_rng = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_rng["bit_generator"],
            "key": torch.from_numpy(numpy_rng["state"]["key"].astype(np.int64)),
            "pos": int(numpy_rng["state"]["pos"]),
            "has_gauss": int(numpy_rng["has_gauss"]),
            "gauss": float(numpy_rng["gauss"]),
        },
    }


def _set_rng_state(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    rng = saved["numpy"]
    np.random.set_state(
        {
            "bit_generator": rng["bit_generator"],
            "state": {"key": rng["key"].numpy().astype(np.uint32), "pos": rng["pos"]},
            "has_gauss": rng["has_gauss"],
            "gauss": rng["gauss"],
        }
    )


def _remove_torn_checkpoints(path: Path) -> None:
    """Temporary files of saves a kill -9 interrupted (atomic_write_bytes could not clean up):
    never renamed, so never a checkpoint; only disk space until removed here."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _read_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 -- unreadable: start over; replaced at the next save
        return None
