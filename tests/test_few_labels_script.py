"""benchmarks/few_labels.py: the report's structure and the claim arithmetic.

No performance assertions: the KD-vs-scratch figures live in the benchmark script, not here.
The end-to-end check trains every arm for one epoch on the first 64 samples of each split.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("few_labels", ROOT / "benchmarks" / "few_labels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


few_labels = _load_script()


def test_one_seed_one_epoch_gives_every_arm_and_both_claims(tmp_path):
    lines = []
    report = few_labels.run_benchmark([0], epochs=1, work_dir=tmp_path, log=lines.append, limit=64)

    assert set(report["arms"]) == {"A", "B", "C", "D"}
    assert len(report["runs"]) == 4 and len(lines) == 4
    for arm in report["arms"].values():
        assert len(arm["test_acc"]) == 1 and 0.0 <= arm["test_acc"][0] <= 1.0
        assert arm["std"] is None  # one seed: no spread to report
    runs = {r["arm"]: r for r in report["runs"]}
    assert all(r["epochs_run"] == r["best_epoch"] == 1 and r["n_test"] == 64 for r in runs.values())
    # KD arms use the configured alpha, scratch arms put all weight on the labels.
    assert runs["A"]["alpha"] == runs["C"]["alpha"] == report["settings"]["kd_alpha"] < 1.0
    assert runs["B"]["alpha"] == runs["D"]["alpha"] == 1.0
    # The few-label arms keep about 10 % of the labels, the same ones for C and D.
    assert runs["A"]["n_labelled"] == runs["B"]["n_labelled"] == 64
    assert 0 < runs["C"]["n_labelled"] == runs["D"]["n_labelled"] < 64
    assert isinstance(report["claims"]["a"]["holds"], bool)
    assert report["claims"]["b"]["margin_pt"] == few_labels.MARGIN_PT
    assert 0.0 <= report["teacher_test_acc"]["0"] <= 1.0
    # Each run kept its own folder, and the teacher cache was shared (one file per data split).
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["A-seed0", "B-seed0", "C-seed0", "D-seed0"]
    assert len(list((tmp_path / "teacher-cache").iterdir())) == 2
    json.dumps(report)  # --json must be able to write it
    text = few_labels.format_report(report)
    assert "claim (a)" in text and "claim (b)" in text and "at least 3" in text


def _runs(accs):
    return [{"arm": arm, "seed": s, "test_acc": a} for arm, per_seed in accs.items() for s, a in per_seed.items()]


def test_claims_are_judged_on_the_stated_margin():
    seeds = [0, 1, 2]
    b = {0: 0.94, 1: 0.92, 2: 0.92}

    def claims(a, c_below_b_pt):
        c = {s: v - c_below_b_pt / 100 for s, v in b.items()}
        return few_labels._claims(_runs({"A": a, "B": b, "C": c}), seeds)

    # A loses on average although it wins one seed; C half a point inside the margin.
    inside = claims({0: 0.95, 1: 0.90, 2: 0.91}, few_labels.MARGIN_PT - 0.5)
    assert not inside["a"]["holds"] and inside["a"]["seeds_won"] == 1
    assert inside["a"]["mean_diff_pt"] == pytest.approx(-2 / 3)  # +1, -2, -1
    assert inside["a"]["per_seed_diff_pt"]["1"] == pytest.approx(-2.0)
    assert inside["b"]["holds"]
    assert inside["b"]["mean_diff_pt"] == pytest.approx(0.5 - few_labels.MARGIN_PT)
    # A wins every seed; C half a point beyond the margin.
    outside = claims({0: 0.95, 1: 0.93, 2: 0.93}, few_labels.MARGIN_PT + 0.5)
    assert outside["a"]["holds"] and outside["a"]["seeds_won"] == 3
    assert not outside["b"]["holds"]
    # C better than B is within any margin: the claim is one-sided.
    assert claims({0: 0.95, 1: 0.93, 2: 0.93}, -2.0)["b"]["holds"]


@pytest.mark.parametrize("argv", [["--seeds", "0", "0"], ["--epochs", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        few_labels.main(argv)
    assert exc.value.code == 2
    assert "--" in capsys.readouterr().err
