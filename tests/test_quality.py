"""Quality metrics (edgedistill/quality.py) on hand-built arrays whose answer follows from the
construction; the user metric's loading and refusals; the quality budgets in gate.py; the config
key."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import run_cli

from edgedistill import quality
from edgedistill.config import Budgets, Config, load_config, validate
from edgedistill.errors import ConfigError, UsageError
from edgedistill.gate import FAIL, INCONCLUSIVE, PASS, gate_results

# ---------------------------------------------------------------- top-1


def test_top1_counts_labelled_samples_over_the_last_axis():
    logits = np.eye(4)[[0, 1, 2, 3, 0, 1]] * 5.0  # predicts 0 1 2 3 0 1
    labels = np.array([0, 1, 2, 0, -1, -1])  # 3 of 4 labelled are right; -1 has no label
    value, n = quality.top1(logits, labels)
    assert value == pytest.approx(0.75) and n == 4
    # (N, seq, C) with one label per position: argmax over classes, not over positions
    seq = np.zeros((2, 3, 5))
    seq[0, :, 4] = 1.0
    seq[1, :, 2] = 1.0
    assert quality.top1(seq, np.array([[4, 4, 4], [2, 2, 0]]))[0] == pytest.approx(5 / 6)
    with pytest.raises(quality.NotMeasured, match="predictions of shape \\[2, 3\\], the labels have shape \\[2\\]"):
        quality.top1(seq, np.array([4, 2]))
    with pytest.raises(quality.NotMeasured, match="no labels"):
        quality.top1(logits, np.full(6, -1))


# ---------------------------------------------------------------- cosine


def test_cosine_is_one_for_a_scaled_copy_and_follows_the_angle():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(20, 6))
    assert quality.cosine(3.0 * teacher, teacher)[0] == pytest.approx(1.0)
    assert quality.cosine(-teacher, teacher)[0] == pytest.approx(-1.0)
    half = teacher.copy()
    half[:10] *= -1  # half the vectors reversed: the mean is 0
    assert quality.cosine(half, teacher)[0] == pytest.approx(0.0, abs=1e-12)
    # 2-D vectors at a known angle: cos(60 degrees)
    angle = np.pi / 3
    a, b = np.array([[1.0, 0.0]]), np.array([[np.cos(angle), np.sin(angle)]])
    assert quality.cosine(a, b)[0] == pytest.approx(0.5)
    with pytest.raises(quality.NotMeasured, match=r"shape \[20, 5\], the teacher's \[20, 6\]"):
        quality.cosine(teacher[:, :5], teacher)


# ---------------------------------------------------------------- recall@10


def two_clusters() -> np.ndarray:
    """22 vectors in two tight clusters of 11 (directions far apart): each sample's 10 nearest
    others are exactly its cluster-mates."""
    rng = np.random.default_rng(1)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return np.repeat(centres, 11, axis=0) + rng.normal(scale=1e-3, size=(22, 3))


def test_recall_at_10_of_a_known_swap():
    teacher = two_clusters()
    rotated = teacher @ np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    assert quality.recall_at_k(rotated, teacher)[0] == pytest.approx(1.0)  # same neighbours, other vectors
    # The model gives sample 0 a vector of the second cluster and sample 11 one of the first:
    # samples 0 and 11 keep none of their 10 neighbours; each of the other 20 keeps 9 of 10.
    swapped = teacher.copy()
    swapped[[0, 11]] = teacher[[11, 0]]
    value, n = quality.recall_at_k(swapped, teacher)
    assert n == 22 and value == pytest.approx(20 * 0.9 / 22)
    assert quality.cosine(rotated, teacher)[0] < 0.99  # cosine and recall measure different things


def test_recall_needs_eleven_samples_and_says_so():
    teacher = two_clusters()[:10]
    with pytest.raises(quality.NotMeasured, match="at least 11 held-out samples.*found 10"):
        quality.recall_at_k(teacher, teacher)
    task = quality.Task.for_run("auto", "embedding", None, teacher)
    q = task.measure(teacher)
    assert q["metric"] == "cosine" and q["value"] == pytest.approx(1.0) and q["drop"] == pytest.approx(0.0)
    r = q["metrics"]["recall@10"]
    assert r["measured"] is False and r["value"] is None and "found 10" in r["reason"]


def test_task_records_the_teacher_value_and_the_drop():
    teacher = two_clusters()
    swapped = teacher.copy()
    swapped[[0, 11]] = teacher[[11, 0]]
    task = quality.Task.for_run("recall@10", "embedding", np.full(22, -1), teacher)
    q = task.measure(swapped)
    assert q["metric"] == "recall@10" and q["teacher"] == pytest.approx(1.0)
    assert q["drop"] == pytest.approx(1.0 - 20 * 0.9 / 22) and q["n"] == 22
    assert list(q["metrics"]) == ["recall@10", "cosine"]
    assert task.reference()["metrics"]["cosine"] == pytest.approx(1.0)
    logits = quality.Task.for_run("auto", "logits", np.array([0, 1, 1]), np.eye(3)[[0, 1, 2]])
    assert logits.measure(np.eye(3)[[0, 1, 1]])["drop"] == pytest.approx(2 / 3 - 1.0)  # better than the teacher
    assert list(logits.measure(np.eye(3))["metrics"]) == ["top1"]


# ---------------------------------------------------------------- user metrics

METRICS = '''
import numpy as np

def mean_first(outputs, labels, teacher_outputs):
    return float(np.asarray(outputs)[:, 0].mean())

def labels_seen(outputs, labels, teacher_outputs):
    return -1.0 if labels is None else float(len(labels))

def nan(outputs, labels, teacher_outputs):
    return float("nan")

def text(outputs, labels, teacher_outputs):
    return "0.9"

def array(outputs, labels, teacher_outputs):
    return np.asarray(outputs).mean(axis=0)

def boom(outputs, labels, teacher_outputs):
    raise ValueError("no idea")
'''


@pytest.fixture(scope="module")
def metrics_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("usermetrics")
    (folder / "qmetrics.py").write_text(METRICS)
    import sys

    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def test_user_metric_is_called_with_outputs_labels_and_teacher(metrics_module):
    teacher = np.arange(12.0).reshape(4, 3)
    task = quality.Task.for_run("qmetrics:mean_first", "embedding", np.full(4, -1), teacher)
    q = task.measure(teacher + 1.0)
    assert q["metric"] == "qmetrics:mean_first" and q["value"] == pytest.approx(5.5) and q["teacher"] == 4.5
    assert q["drop"] == pytest.approx(-1.0) and set(q["metrics"]) == {"qmetrics:mean_first", "cosine", "recall@10"}
    assert quality.Task.for_run("qmetrics:labels_seen", "logits", np.full(4, -1), teacher).measure(teacher)["value"] == -1
    assert quality.Task.for_run("qmetrics:labels_seen", "logits", np.arange(4), teacher).measure(teacher)["value"] == 4


@pytest.mark.parametrize("spec, message", [
    ("qmetrics:nan", "must return a finite number.*returned nan"),
    ("qmetrics:text", "must return a finite number.*returned '0.9' \\(str\\)"),
    ("qmetrics:array", "must return a finite number.*returned an array of shape \\[3\\]"),
    ("qmetrics:boom", "raised ValueError: no idea"),
    ("qmetrics:missing", "has no callable 'missing'"),
    ("nosuchmetricmodule:fn", "cannot import module 'nosuchmetricmodule'"),
])
def test_bad_user_metrics_are_usage_errors(metrics_module, spec, message):
    with pytest.raises(UsageError, match=message):
        quality.check_user_metric(spec, np.ones((4, 3)), None)


def test_config_names_the_forms_of_quality(tmp_path):
    assert Config().quality == "auto" and Config(quality="pkg.mod:fn").quality == "pkg.mod:fn"
    for bad in ("top5", "pkg.mod", "recall@5", "a b:c"):
        (tmp_path / "c.toml").write_text(f'quality = "{bad}"\n')
        with pytest.raises(ConfigError, match='quality: expected "auto", "top1", "cosine", "recall@10" or a '
                                              'function "pkg.mod:fn"'):
            load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="quality_drop"):
        _budget_error({"quality_drop": -0.1})


def _budget_error(data):
    validate(Budgets, data, "t.toml")


# ---------------------------------------------------------------- gate

STUDENT = {"artifact": "student-int8-onnxruntime", "role": "student", "precision": "int8",
           "backend": "onnxruntime", "size_bytes": 1 << 20, "status": "ok", "status_detail": "",
           "quality": {"metric": "cosine", "value": 0.97, "teacher": 1.0, "drop": 0.03, "measured": True, "n": 50}}


def gated(result, **budgets):
    return gate_results({"complete": True, "reference": {"teacher_top1": None},
                         "targets": [{"name": "cpu", "budgets": budgets, "results": [result]}]})


def test_quality_budgets_pass_and_fail_in_the_metric_units():
    assert gated(STUDENT, quality_drop=0.05, min_quality=0.95)[0] == PASS
    verdict, checks = gated(STUDENT, quality_drop=0.02, min_quality=0.98)
    assert verdict == FAIL
    by = {c.budget: c for c in checks}
    assert by["quality_drop"].detail == "0.03 > 0.02" and by["min_quality"].detail == "0.97 < 0.98"


def test_unmeasured_quality_is_never_a_pass():
    r = copy.deepcopy(STUDENT)
    r["quality"].update(value=None, drop=None, measured=False, reason="recall@10 needs at least 11 held-out samples")
    verdict, checks = gated(r, quality_drop=0.5, min_quality=0.0)
    assert verdict == INCONCLUSIVE
    assert all("needs at least 11" in c.detail for c in checks)
    old = {k: v for k, v in STUDENT.items() if k != "quality"}  # a file from before quality metrics
    verdict, checks = gated(old, min_quality=0.0)
    assert verdict == INCONCLUSIVE and "no quality record" in checks[0].detail


# ---------------------------------------------------------------- refused before training


def test_cli_refuses_a_metric_that_does_not_import_in_one_line(tmp_path, cli_env):
    (tmp_path / "edgedistill.toml").write_text('quality = "nosuchmetricmodule:fn"\n[distill]\nepochs = 1\n')
    r = run_cli(["compress"], cwd=tmp_path, env=cli_env)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot import module 'nosuchmetricmodule'" in errors[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()  # before anything is written


def test_a_metric_returning_nan_stops_distill_before_training(metrics_module, tmp_path):
    """Called once on the teacher's outputs for a few validation samples, right after the data
    and models load: no training step, no checkpoint, no stage folder."""
    from edgedistill import api
    from edgedistill.ui import UI

    cfg = Config.model_validate({"quality": "qmetrics:nan", "run": {"out_dir": str(tmp_path / "runs")},
                                 "distill": {"epochs": 1}})
    ws = api.open_workspace(cfg)  # it imports: the call is what fails
    with pytest.raises(UsageError, match="must return a finite number.*returned nan"):
        api.distill(ws, UI(quiet=True))
    assert not (tmp_path / "runs/default/distill").exists()


def test_bench_files_scores_by_labels_else_by_the_reference():
    from edgedistill.api import _files_task

    ref = two_clusters()
    assert _files_task(None, None) is None  # nothing to score by: quality is not recorded
    by_labels = _files_task(np.arange(22) % 2, ref)
    assert by_labels.names == ["top1"]
    by_reference = _files_task(None, ref)  # no labels: embeddings against the reference's
    swapped = ref.copy()
    swapped[[0, 11]] = ref[[11, 0]]
    q = by_reference.measure(swapped)
    assert q["metric"] == "cosine" and q["teacher"] == pytest.approx(1.0)
    assert q["metrics"]["recall@10"]["value"] == pytest.approx(20 * 0.9 / 22)


def test_reports_show_the_metric_by_name():
    from edgedistill.report import csv as csv_report
    from edgedistill.report.junit import check_message
    from edgedistill.report.rows import quality_text, reference_quality

    q = {**STUDENT["quality"], "metrics": {"cosine": {"value": 0.97, "measured": True},
                                           "recall@10": {"value": None, "measured": False}}}
    assert quality_text({**STUDENT, "quality": q}) == "cosine 0.9700 · recall@10 —"
    assert quality_text({"accuracy": {"top1": 0.5}}) == "top-1 50.00 %"  # a file from before quality metrics
    assert reference_quality({"quality": {"metric": "cosine", "metrics": {"cosine": 1.0, "recall@10": 1.0}}}) == (
        "teacher cosine", "1.0000 · recall@10 1.0000")
    _, checks = gated(STUDENT, min_quality=0.98)
    assert check_message(checks[0].to_json()) == "min_quality 0.97 < 0.98"
    doc = {"targets": [{"name": "cpu", "results": [{**STUDENT, "quality": q, "threads": 1}]}]}
    header, row = csv_report.render(doc).splitlines()
    cells = dict(zip(header.split(","), row.split(",")))
    assert cells["quality_metric"] == "cosine" and cells["quality"] == "0.97" and cells["recall_at_10"] == ""
