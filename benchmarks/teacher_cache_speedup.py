"""Training throughput with and without the teacher-output cache, on the built-in digits task.

The built-in teacher costs 151.6 M MACs per sample, the student 19.2 M (7.9x less). With the cache
the teacher runs once over the training set (the one-time fill, timed here on an empty cache
directory) and each step reads its logits; without it (distill.cache_teacher = false, what
augmentation needs) every step runs the teacher forward too. Same seed, same settings; training
samples/s is the trainer's own figure (the step loop including the teacher, not the BN
recalibration or validation), summed over the epochs.

    .venv/bin/python benchmarks/teacher_cache_speedup.py [--epochs 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgedistill.config import DataConfig, DistillConfig
from edgedistill.data import load_data
from edgedistill.distill.teacher_cache import teacher_logits
from edgedistill.distill.trainer import distill
from edgedistill.zoo import digits_student, digits_teacher


def train(splits, cfg: DistillConfig, work: Path, name: str) -> dict:
    torch.manual_seed(0)
    student = digits_student()
    start = time.perf_counter()
    result = distill(digits_teacher(), student, splits, cfg, work / name, seed=0, cache_dir=work / "cache")
    wall = time.perf_counter() - start
    samples = sum(h["samples_per_s"] * h["seconds"] for h in result.history)
    seconds = sum(h["seconds"] for h in result.history)
    return {
        "train_samples_per_s": samples / seconds,
        "train_seconds": seconds,
        "wall_seconds": wall,
        "student_val_acc": result.student_val_acc,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared box)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    splits = load_data(DataConfig(), seed=0)
    cfg = DistillConfig(epochs=args.epochs, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        teacher_logits(digits_teacher(), splits, work / "cache")  # the one-time fill
        fill = time.perf_counter() - start
        cached = train(splits, cfg, work, "cached")  # reads the cache filled above
        live = train(splits, cfg.model_copy(update={"cache_teacher": False}), work, "live")

    ratio = cached["train_samples_per_s"] / live["train_samples_per_s"]
    figures = {
        "epochs": args.epochs, "threads": args.threads, "train_samples": len(splits.x_train),
        "cache_fill_seconds": fill, "cached": cached, "live": live, "speedup": ratio,
    }
    print(f"digits, {args.epochs} epochs x {len(splits.x_train)} samples, {args.threads} thread(s)")
    print(f"  cache fill (teacher over the training set, once): {fill:.2f} s")
    for name, r in (("with cache", cached), ("without cache", live)):
        print(f"  {name:>13}: {r['train_samples_per_s']:7.0f} training samples/s "
              f"(wall {r['wall_seconds']:.1f} s, student val {r['student_val_acc']:.2%})")
    print(f"  speed-up: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
