"""Checkpoint and resume: mid-epoch checkpoints, SIGKILL and rerun, --restart.

Run as a script (`python tests/test_resume.py DATA.npz OUT_DIR`) this file is also the training
process the SIGKILL test kills: a tiny teacher and student on a small npz, deterministic on one
thread, checkpointing every 3 optimizer steps.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_distill import FAST, LossCalls, tiny_net, tiny_splits
from torch import nn

from edgedistill import artifacts
from edgedistill.config import DataConfig, DistillConfig
from edgedistill.data import load_data
from edgedistill.distill import trainer
from edgedistill.distill.trainer import distill as _distill
from edgedistill.errors import UsageError

# Untrained teachers score at chance, which distill() refuses (RELIABILITY 30, tests/test_teacher_check.py):
# these tests are about the training loop, so they allow it.
distill = functools.partial(_distill, allow_weak_teacher=True)

EVERY = 3
CFG = DistillConfig(epochs=3, batch_size=32, lr=1e-2, threads=1, checkpoint_every_steps=EVERY)
STEP_SLEEP_S = 0.05  # per training forward: leaves time to see a checkpoint and kill mid-epoch
TIMING = {"samples_per_s", "seconds"}  # wall-clock figures; everything else must match exactly


class Slow(nn.Module):
    """A tiny conv net whose training forward sleeps, so that a run takes about a second."""

    def __init__(self, seed: int, sleep: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
            nn.Flatten(), nn.Linear(64, 3),
        )
        self.sleep = sleep

    def forward(self, x):
        if self.sleep and self.training and torch.is_grad_enabled():
            time.sleep(self.sleep)
        return self.net(x)


def write_data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.normal(size=(300, 1, 4, 4)).astype(np.float32) + y[:, None, None, None]
    np.savez(path, x=x, y=y)
    return path


def train(data: Path, out: Path, sleep: float = 0.0, cfg: DistillConfig = CFG, **kwargs):
    splits = load_data(DataConfig(spec=str(data)), seed=0)
    return distill(
        Slow(1), Slow(2, sleep), splits, cfg, out, seed=0, cache_dir=out.parent / "cache", **kwargs
    )


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def read_history(out: Path):
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def assert_same_weights(a: Path, b: Path):
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    assert wa.keys() == wb.keys()
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key


def checkpoint_position(path: Path) -> tuple[int, int] | None:
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001 -- not written yet
        return None
    return saved["epoch"], saved["step"]


def test_sigkill_mid_epoch_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    """RELIABILITY 13: SIGKILL mid-epoch, rerun: resumes at the next batch with the losses and
    weights of an uninterrupted run."""
    data = write_data(tmp_path / "d.npz")
    straight = train(data, tmp_path / "straight")

    killed = tmp_path / "killed"
    command = [sys.executable, __file__, str(data), str(killed)]
    # PYTHONPATH: the child imports this checkout's edgedistill, not the installed one.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for a checkpoint inside epoch 2 (epoch index 1, step > 0)
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            position = checkpoint_position(killed / "checkpoint.pt")
            if position is not None and position[0] == 1 and position[1] > 0:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    epoch, step = checkpoint_position(killed / "checkpoint.pt")
    assert epoch == 1 and step > 0  # what the rerun starts from is a mid-epoch checkpoint
    assert not (killed / "student.safetensors").exists()

    rerun = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from epoch {epoch + 1} step {step}" in rerun.stdout

    assert_same_weights(killed, tmp_path / "straight")
    assert without_timing(read_history(killed)) == without_timing(straight.history)


def test_reliability_12_kill_9_during_a_checkpoint_save_keeps_the_previous_one(tmp_path):
    """RELIABILITY 12: SIGKILL in the middle of the second checkpoint save (its temporary file torn
    in half, not yet renamed). checkpoint.pt is still the complete step-3 one and loads; the rerun
    removes the torn file, resumes from the checkpoint and ends with the losses and weights of an
    uninterrupted run."""
    data = write_data(tmp_path / "d.npz")
    straight = train(data, tmp_path / "straight")

    killed = tmp_path / "killed"
    command = [sys.executable, __file__, str(data), str(killed)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.run(command, env={**env, "KILL_AT_SAVE": "2"}, capture_output=True, text=True,
                           timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    torn = list(killed.glob(".checkpoint.pt.*"))
    assert len(torn) == 1 and 0 < torn[0].stat().st_size < (killed / "checkpoint.pt").stat().st_size
    assert checkpoint_position(killed / "checkpoint.pt") == (0, EVERY)  # the first save, complete
    assert not (killed / "student.safetensors").exists()

    rerun = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from epoch 1 step {EVERY}" in rerun.stdout
    assert not torn[0].exists()  # the torn temporary file is removed by the rerun
    assert_same_weights(killed, tmp_path / "straight")
    assert without_timing(read_history(killed)) == without_timing(straight.history)


def test_in_process_mid_epoch_resume_is_exact(tmp_path, monkeypatch):
    """RELIABILITY 13: interrupted at step k of epoch 2 and resumed in-process: the same losses and
    weights."""
    data = write_data(tmp_path / "d.npz")
    straight = train(data, tmp_path / "a")

    calls, real_loss = [0], trainer.hinton_loss

    # 7 steps per epoch, saves after global steps 3, 6, 7 (epoch end), 9: stopping inside global
    # step 12 (epoch 2, step 5) leaves the checkpoint of epoch 2, step 2.
    def interrupt_at_step_12(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 12:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "hinton_loss", interrupt_at_step_12)
    try:
        train(data, tmp_path / "b")
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass
    assert checkpoint_position(tmp_path / "b" / "checkpoint.pt") == (1, 2)
    monkeypatch.setattr(trainer, "hinton_loss", real_loss)
    notes = []
    resumed = train(data, tmp_path / "b", notify=notes.append)
    assert notes and notes[0].startswith("resuming from epoch 2 step 2")
    assert without_timing(resumed.history) == without_timing(straight.history)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_restart_ignores_the_checkpoint_and_trains_again(tmp_path, monkeypatch):
    data = write_data(tmp_path / "d.npz")
    first = train(data, tmp_path / "run", notify=(notes := []).append)
    assert notes == []  # nothing to resume the first time
    train(data, tmp_path / "run", notify=notes.append)
    assert notes == [f"already trained ({tmp_path / 'run' / 'checkpoint.pt'}); --restart trains again"]

    steps, real_loss = [0], trainer.hinton_loss

    def counting(*args, **kwargs):
        steps[0] += 1
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "hinton_loss", counting)
    again = train(data, tmp_path / "run", cfg=CFG.model_copy(update={"restart": True}))
    assert steps[0] == 3 * 7  # every step of every epoch, from the start
    assert without_timing(again.history) == without_timing(first.history)


def test_cli_resume_restart_flag_sets_the_config(monkeypatch):
    from edgedistill import cli

    monkeypatch.setattr("edgedistill.api.open_workspace", lambda cfg, **_: cfg)
    opts = dict.fromkeys(("config_path", "teacher", "teacher_weights", "student", "data", "epochs",
                          "run_name", "out_dir"))
    opts.update(backends=(), targets=(), trust_sha256=())
    # None: neither flag given (automatic resume); True: --resume; False: --restart
    for resume, restart in ((None, False), (True, False), (False, True)):
        assert cli._workspace({**opts, "resume": resume}).distill.restart is restart


def kill_during_checkpoint_save(n: int) -> None:
    """In this process: at the n-th checkpoint save, tear its temporary file in half and SIGKILL
    the process, after the bytes were written and before fsync and the rename."""
    real_fsync, saves = os.fsync, [0]

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".checkpoint.pt."):
            saves[0] += 1
            if saves[0] == n:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)

    artifacts.os.fsync = fsync


if __name__ == "__main__":  # the process the SIGKILL tests start (and kill)
    if os.environ.get("KILL_AT_SAVE"):
        kill_during_checkpoint_save(int(os.environ["KILL_AT_SAVE"]))
    result = train(Path(sys.argv[1]), Path(sys.argv[2]), sleep=STEP_SLEEP_S, notify=print)
    print(f"done: {result.student_val_acc:.4f}", flush=True)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """RELIABILITY 12: the disk fills up while the second checkpoint is written. The run stops with a
    one-line error, the step-4 checkpoint is intact (no torn file, no temporary left), and a rerun
    continues from it to the weights of an uninterrupted run."""
    splits = tiny_splits(tmp_path / "d.npz")
    cfg = FAST.model_copy(update={"checkpoint_every_steps": 4})
    run = {"splits": splits, "cfg": cfg, "seed": 0, "cache_dir": tmp_path / "cache"}
    straight = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "a", **run)

    real_fsync, saves = os.fsync, [0]

    def fsync_fills_the_disk_at_the_second_save(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".checkpoint.pt."):
            saves[0] += 1
            if saves[0] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(artifacts.os, "fsync", fsync_fills_the_disk_at_the_second_save)
    with pytest.raises(UsageError, match="No space left on device; the previous checkpoint is intact"):
        distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    monkeypatch.setattr(artifacts.os, "fsync", real_fsync)
    # The second save was epoch 1's end (after its history line); no temporary file is left.
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.pt", "history.jsonl"]
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 4)

    steps = LossCalls(monkeypatch, "hinton_loss")
    resumed = distill(tiny_net(seed=1), tiny_net(seed=2), out_dir=tmp_path / "b", **run)
    assert steps.calls == 3 * 7 - 4  # continued after step 4
    for key, value in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[key], value), key
