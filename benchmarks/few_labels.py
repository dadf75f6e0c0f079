"""Does distillation help, and does it make up for missing labels? (issue 4, item 4)

On the built-in task (builtin:digits, the shipped digits teacher, the digits student) this trains
the same student four ways, with the same epochs, batch size, learning rate and schedule
(edgedistill.distill.trainer.distill, the config defaults), for every seed:

    A  KD       all labels                     alpha = the default (0.3 CE + 0.7 KD)
    B  scratch  all labels                     alpha = 1.0: labels only, the KD term weighs 0
    C  KD       10 % of the labels, the rest   unlabelled samples learn from the teacher only
                unlabelled (label_fraction=0.1)
    D  scratch  the same 10 % of the labels    alpha = 1.0: unlabelled samples add nothing

and reports each arm's top-1 on the held-out TEST split (never used for training or for picking
the best epoch, which is chosen on the validation split), mean +- sample std over seeds, and two
claims, with the margin fixed here before any run:

    (a) A beats B: mean(A - B) > 0 (the per-seed differences are printed too);
    (b) C is within MARGIN_PT top-1 points of B: mean(C) >= mean(B) - MARGIN_PT.

Exits 1 if a claim fails, 2 on bad arguments.

    .venv/bin/python benchmarks/few_labels.py                       # 3 seeds, 12 epochs, ~6+ min
    .venv/bin/python benchmarks/few_labels.py --seeds 0 1 2 3 4 --epochs 12 --json out.json

What a seed changes: the student's initial weights, the shuffling, AND the data split itself
(load_data's stratified train/validation/test split and the choice of the kept 10 % of labels are
seeded), so the spread over seeds includes the split. Within one seed every arm sees the same
split, the same initial student and, for C and D, the same kept labels: A-B is a paired difference.

Caveat: the shipped teacher was trained on the seed-0 training split. For other seeds part of that
split's test set was in the teacher's training data, so the teacher's test top-1 printed for those
seeds is optimistic. The students are not affected in the same way: they only ever see their own
training split's inputs (with the teacher's outputs on them), never the test inputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing edgedistill
    sys.path.insert(0, str(ROOT))

import torch

from edgedistill.config import DataConfig, DistillConfig
from edgedistill.data import DataSplits, load_data
from edgedistill.distill.trainer import distill, evaluate
from edgedistill.specs import load_model

TEACHER_SPEC = "edgedistill.zoo:digits_teacher"  # its factory loads the shipped weights
STUDENT_SPEC = "edgedistill.zoo:digits_student"
DATA_SPEC = "builtin:digits"
FEW_LABELS = 0.1  # share of training labels kept in arms C and D
MARGIN_PT = 1.0  # claim (b): C may be at most this many top-1 points below B; fixed in advance
SCRATCH_ALPHA = 1.0  # all weight on cross-entropy: the teacher's term is multiplied by 0
MIN_SEEDS = 3  # the issue asks for at least 3; fewer still runs (smoke tests) but says so


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    label_fraction: float
    kd: bool  # False: alpha = SCRATCH_ALPHA

    def alpha(self, default: float) -> float:
        return default if self.kd else SCRATCH_ALPHA


ARMS = (
    Arm("A", "KD, all labels", 1.0, kd=True),
    Arm("B", "scratch, all labels", 1.0, kd=False),
    Arm("C", f"KD, {FEW_LABELS:.0%} labels + rest unlabelled", FEW_LABELS, kd=True),
    Arm("D", f"scratch, {FEW_LABELS:.0%} labels", FEW_LABELS, kd=False),
)


def run_benchmark(
    seeds: list[int],
    epochs: int,
    work_dir: Path | None = None,
    log: Any = print,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train every arm for every seed; return the per-run results, per-arm summary and claims.

    Runs write into work_dir (a temporary folder when None): one teacher-logit cache shared by
    all runs (the teacher is evaluated once per data split, not once per run) and one out_dir
    per run, so no run can resume another's checkpoint. `limit` keeps only the first `limit`
    samples of each split: for smoke tests of this script, never for the figures.
    """
    base = DistillConfig(epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="few-labels-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        teacher = load_model(TEACHER_SPEC, None, role="teacher")
        runs, teacher_test, start = [], {}, time.perf_counter()
        for seed in seeds:
            for fraction in sorted({a.label_fraction for a in ARMS}, reverse=True):
                splits = load_data(DataConfig(spec=DATA_SPEC, label_fraction=fraction), seed=seed)
                if limit is not None:
                    splits = _head(splits, limit)
                if seed not in teacher_test:  # the test split is the same for every label fraction
                    teacher_test[seed] = evaluate(teacher, splits.x_test, splits.y_test)
                for arm in (a for a in ARMS if a.label_fraction == fraction):
                    cfg = base.model_copy(update={"alpha": arm.alpha(base.alpha)})
                    record = _run_one(arm, seed, teacher, splits, cfg, root)
                    runs.append(record)
                    log(
                        f"seed {seed} arm {arm.name} ({arm.description}): test top-1 "
                        f"{record['test_acc']:.2%}, val {record['val_acc']:.2%}, {record['wall_s']:.0f} s"
                    )
        total = time.perf_counter() - start
    settings = {
        "data": DATA_SPEC,
        "teacher": TEACHER_SPEC,
        "student": STUDENT_SPEC,
        "seeds": list(seeds),
        "distill": base.model_dump(mode="json", exclude={"alpha"}),
        "kd_alpha": base.alpha,
        "scratch_alpha": SCRATCH_ALPHA,
        "few_label_fraction": FEW_LABELS,
        "margin_pt": MARGIN_PT,
        "split": "load_data's default seeded split: it changes with the seed",
        "torch_threads": torch.get_num_threads(),
        "limit": limit,
    }
    return {
        "settings": settings,
        "runs": runs,
        "teacher_test_acc": {str(s): a for s, a in teacher_test.items()},
        "arms": _summarise_arms(runs, seeds),
        "claims": _claims(runs, seeds),
        "wall_s": total,
    }


def _head(splits: DataSplits, n: int) -> DataSplits:
    """The first n samples of every split (already shuffled by the stratified split)."""
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    cut = {k: None if getattr(splits, k) is None else getattr(splits, k)[:n] for k in names}
    # A new fingerprint: the teacher cache and the run key must not mistake it for the full data.
    digest = hashlib.sha256(f"{splits.fingerprint}:first {n}".encode()).hexdigest()
    return dataclasses.replace(splits, fingerprint=digest, **cut)


def _run_one(
    arm: Arm, seed: int, teacher: torch.nn.Module, splits: DataSplits, cfg: DistillConfig, root: Path
) -> dict[str, Any]:
    # Seeded before building the student, as api.distill does: every arm of a seed starts from
    # the same initial weights, so A - B compares training signals, not initialisations.
    torch.manual_seed(seed)
    student = load_model(STUDENT_SPEC, None, role="student")
    start = time.perf_counter()
    result = distill(
        teacher, student, splits, cfg, root / "runs" / f"{arm.name}-seed{seed}",
        seed=seed, cache_dir=root / "teacher-cache",
    )
    wall = time.perf_counter() - start
    labels = splits.y_train
    return {
        "arm": arm.name,
        "seed": seed,
        "test_acc": evaluate(result.student, splits.x_test, splits.y_test),
        "val_acc": result.student_val_acc,
        "epochs_run": len(result.history),
        # The trainer keeps the first epoch with the best validation top-1: on a small validation
        # split that saturates (100 %), that can be an early epoch, which this makes visible.
        "best_epoch": _best_epoch(result.history),
        "alpha": cfg.alpha,
        "n_train": len(splits.x_train),
        "n_labelled": int((labels >= 0).sum()) if labels is not None else 0,
        "n_test": len(splits.x_test),
        "wall_s": wall,
    }


def _best_epoch(history: list[dict]) -> int | None:
    vals = [r["val_acc"] for r in history]
    return vals.index(max(vals)) + 1 if vals else None


def _accs(runs: list[dict], arm: str, seeds: list[int]) -> list[float]:
    by_seed = {r["seed"]: r["test_acc"] for r in runs if r["arm"] == arm}
    return [by_seed[s] for s in seeds]


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    # Sample std (n - 1): the spread a new seed would show; undefined for one seed.
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _summarise_arms(runs: list[dict], seeds: list[int]) -> dict[str, dict]:
    out = {}
    for arm in ARMS:
        accs = _accs(runs, arm.name, seeds)
        mean, std = _mean_std(accs)
        out[arm.name] = {"description": arm.description, "test_acc": accs, "mean": mean, "std": std}
    return out


def _claims(runs: list[dict], seeds: list[int]) -> dict[str, dict]:
    a, b, c = (_accs(runs, name, seeds) for name in "ABC")
    diff_ab = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    mean_ab, std_ab = _mean_std(diff_ab)
    gap_cb = 100 * (statistics.fmean(c) - statistics.fmean(b))
    return {
        "a": {
            "statement": "KD student (A) beats scratch student (B), all labels: mean(A - B) > 0",
            "mean_diff_pt": mean_ab,
            "std_diff_pt": std_ab,
            "per_seed_diff_pt": dict(zip(map(str, seeds), diff_ab, strict=True)),
            "seeds_won": sum(d > 0 for d in diff_ab),
            "holds": mean_ab > 0,
        },
        "b": {
            "statement": f"KD with {FEW_LABELS:.0%} labels (C) within {MARGIN_PT:g} pt of scratch "
            f"with all labels (B): mean(C) >= mean(B) - {MARGIN_PT:g} pt",
            "mean_diff_pt": gap_cb,
            "per_seed_diff_pt": {
                str(s): 100 * (x - y) for s, x, y in zip(seeds, c, b, strict=True)
            },
            "margin_pt": MARGIN_PT,
            "holds": gap_cb >= -MARGIN_PT,
        },
    }


def format_report(report: dict[str, Any]) -> str:
    seeds = report["settings"]["seeds"]
    head = f"{'arm':<4}{'':<34}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds)
    lines = [head + f"{'mean':>9}{'± std':>8}"]
    for name, arm in report["arms"].items():
        std = "" if arm["std"] is None else f"{100 * arm['std']:.2f}"
        lines.append(
            f"{name:<4}{arm['description']:<34}"
            + "".join(f"{100 * a:>10.2f}" for a in arm["test_acc"])
            + f"{100 * arm['mean']:>9.2f}{std:>8}"
        )
    teacher = [report["teacher_test_acc"][str(s)] for s in seeds]
    lines.append(f"{'T':<4}{'teacher (seed 0 split only clean)':<34}" + "".join(f"{100 * a:>10.2f}" for a in teacher))
    chosen = {name: [r["best_epoch"] for s in seeds for r in report["runs"] if (r["arm"], r["seed"]) == (name, s)]
              for name in report["arms"]}
    lines.append("epoch kept (best validation top-1, earliest on ties), per seed: "
                 + "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in chosen.items()))
    n_test = {r["n_test"] for r in report["runs"]}
    lines.append(f"held-out test top-1 in %, {'/'.join(map(str, sorted(n_test)))} test samples per seed "
                 f"(1 sample = {100 / min(n_test):.2f} pt); the split changes with the seed")
    for key, claim in report["claims"].items():
        per_seed = ", ".join(f"seed {s}: {d:+.2f}" for s, d in claim["per_seed_diff_pt"].items())
        lines.append(f"claim ({key}) {'HOLDS' if claim['holds'] else 'FAILS'}: {claim['statement']}")
        extra = f" ± {claim['std_diff_pt']:.2f}" if claim.get("std_diff_pt") is not None else ""
        lines.append(f"    mean difference {claim['mean_diff_pt']:+.2f} pt{extra} ({per_seed})")
    if len(seeds) < MIN_SEEDS:
        lines.append(f"note: {len(seeds)} seed(s); the issue's claims need at least {MIN_SEEDS}")
    lines.append(f"wall time {report['wall_s']:.0f} s for {len(report['runs'])} runs "
                 f"({report['settings']['torch_threads']} torch threads)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=DistillConfig().epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, found {args.epochs}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, found {args.seeds}")
    print(f"claims fixed before the runs: (a) mean(A - B) > 0; (b) mean(C) >= mean(B) - {MARGIN_PT:g} pt")
    report = run_benchmark(args.seeds, args.epochs)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(c["holds"] for c in report["claims"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
