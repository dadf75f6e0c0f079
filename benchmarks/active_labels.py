"""Does labelling the samples `suggest-labels` ranks first beat labelling random ones? (issue 12, item 6)

On the built-in task (builtin:digits, the shipped digits teacher, the digits student), per seed:

1. A held-out set (HOLDOUT_SHARE of the data, stratified) is put aside; it is never in any file
   the tool reads, and every student is scored on it (top-1).
2. The rest is the pool, written as an .npz in which only a small stratified share keeps its label
   (--start-share) and every other row is -1: the cold-start situation.
3. `edgedistill suggest-labels` (api.suggest_labels: distill, then rank the unlabelled training
   rows) writes the top LABEL_SHARE of the pool's rows as CSV.
4. Two arms reveal the true labels of LABEL_SHARE of the pool: the CSV's top rows ("ranked"), or
   as many unlabelled training rows drawn at random ("random"); each distils again from the same
   initial student, on the same split (train/validation rows as in step 3: only which training
   rows carry a label differs), with the same settings.

Reported: held-out top-1 of the first student and of both arms, mean +- sample std over seeds,
and the per-seed paired difference ranked - random. No claim is asserted: the script prints what
it measured either way (exit 0; 2 on bad arguments).

    .venv/bin/python benchmarks/active_labels.py                     # 3 seeds, 4 epochs
    .venv/bin/python benchmarks/active_labels.py --seeds 0 1 2 3 4 --epochs 6 --csv-dir out/
    .venv/bin/python benchmarks/active_labels.py --quick             # a smoke run for tests

Caveat: the shipped teacher was trained on the seed-0 split of load_data; its held-out figures
for other splits are optimistic. The students only ever see pool inputs and the teacher's
outputs on them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing edgedistill
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from edgedistill import api
from edgedistill.config import Config, DataConfig, DistillConfig, RunConfig, cache_dir
from edgedistill.data import load_data
from edgedistill.distill.trainer import distill, evaluate
from edgedistill.specs import load_model
from edgedistill.ui import UI

HOLDOUT_SHARE = 0.2  # of the whole data set: the benchmark's own held-out test set
START_SHARE = 0.1  # of the pool: labelled at the start (the tool's split needs >= ~100 labels)
LABEL_SHARE = 0.05  # of the pool: the labels each arm adds
STUDENT_SPEC = "edgedistill.zoo:digits_student"
# Fewer than distill's 12: 9 distillations of ~1,300 samples must fit a 2-core machine's time;
# the digits student's validation top-1 plateaus within the first few epochs.
EPOCHS = 4
QUICK = {"pool_size": 150, "start_share": 0.7, "epochs": 1, "seeds": [0]}  # --quick: seconds, not figures


def run_benchmark(seeds: list[int], epochs: int, work_dir: Path, *, pool_size: int | None = None,
                  start_share: float = START_SHARE, log: Any = print) -> dict[str, Any]:
    x_all, y_all = _digits()
    runs = []
    started = time.perf_counter()
    for seed in seeds:
        record = _one_seed(seed, x_all, y_all, epochs, Path(work_dir) / f"seed{seed}", pool_size, start_share)
        runs.append(record)
        log(f"seed {seed}: first {record['first']:.2%}, ranked {record['ranked']:.2%}, "
            f"random {record['random']:.2%} ({record['n_revealed']} labels added each, {record['wall_s']:.0f} s)")
    return {"runs": runs, "summary": _summary(runs), "epochs": epochs, "seeds": seeds,
            "wall_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads()}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The built-in data set in its own row order, as the tool reads it (load_data's split rows
    put back where they came from by their recorded indices)."""
    s = load_data(DataConfig(spec="builtin:digits"), seed=0)
    n = len(s.train_index) + len(s.val_index) + len(s.test_index)
    x, y = np.empty((n, *s.input_shape), dtype=np.float32), np.empty(n, dtype=np.int64)
    for index, xs, ys in ((s.train_index, s.x_train, s.y_train), (s.val_index, s.x_val, s.y_val),
                          (s.test_index, s.x_test, s.y_test)):
        x[index], y[index] = xs.numpy(), ys.numpy()
    return x, y


def _one_seed(seed: int, x_all: np.ndarray, y_all: np.ndarray, epochs: int, folder: Path,
              pool_size: int | None, start_share: float) -> dict[str, Any]:
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(y_all))
    pool, holdout = train_test_split(rows, test_size=HOLDOUT_SHARE, stratify=y_all, random_state=seed)
    if pool_size is not None:  # --quick: a smaller pool and held-out set, same procedure
        pool, holdout = pool[:pool_size], holdout[: max(20, pool_size // 5)]
    x, y = x_all[pool], y_all[pool]
    labelled, _ = train_test_split(np.arange(len(y)), train_size=start_share, stratify=y, random_state=seed)
    y_masked = np.full_like(y, -1)
    y_masked[labelled] = y[labelled]
    data = folder / "pool.npz"
    np.savez(data, x=x, y=y_masked)

    cfg = Config(run=RunConfig(name="first", out_dir=folder / "runs", seed=seed),
                 data=DataConfig(spec=str(data)), distill=DistillConfig(epochs=epochs))
    ws, ui = api.open_workspace(cfg), UI(quiet=True)
    n_revealed = max(1, round(LABEL_SHARE * len(pool)))
    suggestions = folder / "suggested.csv"
    api.suggest_labels(ws, ui, suggestions, top=n_revealed)
    first = api.distill(ws, ui)  # the stage suggest_labels made: reused, not trained again
    with open(suggestions, newline="") as f:
        ranked = np.array([int(r["index"]) for r in csv.DictReader(f)], dtype=np.int64)
    splits = first.splits
    unlabelled_rows = splits.train_index[splits.y_train.numpy() < 0]
    random_rows = np.random.default_rng(seed).choice(unlabelled_rows, size=len(ranked), replace=False)

    x_hold = torch.from_numpy(x_all[holdout])
    y_hold = torch.from_numpy(y_all[holdout].astype(np.int64))
    result = {"seed": seed, "first": evaluate(first.student, x_hold, y_hold), "n_revealed": len(ranked),
              "n_pool": len(pool), "n_labelled_start": len(labelled), "n_holdout": len(holdout),
              "teacher": evaluate(first.teacher, x_hold, y_hold)}
    for arm, revealed in (("ranked", ranked), ("random", random_rows)):
        arm_splits = _reveal(splits, y, revealed)
        torch.manual_seed(seed)  # the same initial student as the first run (api.distill seeds so)
        student = load_model(STUDENT_SPEC, None, role="student")
        trained = distill(first.teacher, student, arm_splits, cfg.distill, folder / "runs" / arm, seed=seed,
                          cache_dir=cache_dir(cfg.run) / "teacher")
        result[arm] = evaluate(trained.student, x_hold, y_hold)
        result[f"{arm}_wrong_before"] = _teacher_errors(first, revealed, y)
    result["wall_s"] = time.perf_counter() - start
    return result


def _reveal(splits, y_true: np.ndarray, rows: np.ndarray):
    """The same split with the true labels of `rows` (rows of the pool file) in the training labels."""
    y_train = splits.y_train.clone()
    where = np.flatnonzero(np.isin(splits.train_index, rows))
    y_train[torch.from_numpy(where)] = torch.from_numpy(y_true[splits.train_index[where]].astype(np.int64))
    # The fingerprint is kept: it keys the teacher's cached outputs, which depend on x alone (the
    # same here); each arm trains in its own folder, so no checkpoint is shared between arms.
    return dataclasses.replace(splits, y_train=y_train)


def _teacher_errors(first, rows: np.ndarray, y_true: np.ndarray) -> int:
    """How many of the revealed rows the teacher gets wrong: labels there correct the soft targets."""
    from edgedistill.distill.teacher_cache import predict

    where = np.flatnonzero(np.isin(first.splits.train_index, rows))
    x = first.splits.x_train[torch.from_numpy(where)]
    wrong = predict(first.teacher, x).argmax(dim=1).numpy() != y_true[first.splits.train_index[where]]
    return int(wrong.sum())


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _summary(runs: list[dict]) -> dict[str, dict]:
    out = {}
    for key in ("first", "ranked", "random"):
        mean, std = _mean_std([r[key] for r in runs])
        out[key] = {"mean": mean, "std": std}
    mean, std = _mean_std([100 * (r["ranked"] - r["random"]) for r in runs])
    out["difference_pt"] = {"mean": mean, "std": std}
    return out


def _pm(mean: float, std: float | None, scale: float = 100) -> str:
    return f"{scale * mean:.2f}" + ("" if std is None else f" ± {scale * std:.2f}")


def format_report(report: dict[str, Any]) -> str:
    runs, s = report["runs"], report["summary"]
    head = f"{'student':<40}" + "".join(f"{'seed ' + str(r['seed']):>10}" for r in runs) + f"{'mean ± std':>16}"
    lines = [head]
    r0 = runs[0]
    labels = {
        "first": f"first ({r0['n_labelled_start']} labels of {r0['n_pool']})",
        "ranked": f"+ {r0['n_revealed']} labels, top-ranked",
        "random": f"+ {r0['n_revealed']} labels, random",
    }
    for key, label in labels.items():
        lines.append(f"{label:<40}" + "".join(f"{100 * r[key]:>10.2f}" for r in runs)
                     + f"{_pm(s[key]['mean'], s[key]['std']):>16}")
    d = s["difference_pt"]
    lines.append(f"{'ranked - random (pt)':<40}" + "".join(f"{100 * (r['ranked'] - r['random']):>+10.2f}" for r in runs)
                 + f"{_pm(d['mean'], d['std'], 1):>16}")
    lines.append(f"{'teacher (reference)':<40}" + "".join(f"{100 * r['teacher']:>10.2f}" for r in runs))
    lines.append("revealed rows the teacher got wrong, ranked / random: "
                 + ", ".join(f"seed {r['seed']}: {r['ranked_wrong_before']} / {r['random_wrong_before']}" for r in runs))
    lines.append(f"held-out top-1 in %, {r0['n_holdout']} samples per seed (1 sample = {100 / r0['n_holdout']:.2f} pt); "
                 f"{report['epochs']} epochs per distillation, {report['torch_threads']} torch threads, "
                 f"{report['wall_s']:.0f} s in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--start-share", type=float, default=START_SHARE,
                        help="share of the pool labelled at the start")
    parser.add_argument("--csv-dir", type=Path,
                        help="keep the pool files and suggested.csv here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, one epoch, a 150-row pool: a smoke run, not figures")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, found {args.epochs}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, found {args.seeds}")
    if not 0 < args.start_share < 1:
        parser.error(f"--start-share must be in (0, 1), found {args.start_share}")
    options = {"pool_size": None, "start_share": args.start_share}
    seeds, epochs = args.seeds, args.epochs
    if args.quick:
        seeds, epochs = QUICK["seeds"], QUICK["epochs"]
        options = {"pool_size": QUICK["pool_size"], "start_share": QUICK["start_share"]}
    with tempfile.TemporaryDirectory(prefix="active-labels-") as tmp:
        work = args.csv_dir or Path(tmp)
        report = run_benchmark(seeds, epochs, work, **options)
        print(format_report(report))
        if args.csv_dir:
            print(f"suggested rows: {', '.join(str(work / f'seed{s}' / 'suggested.csv') for s in seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
