"""RELIABILITY 30 (issue 9, finding 10): a teacher at chance on its own held-out data stops the run.

The teachers are the shipped digits teacher (edgedistill/weights/digits_teacher.safetensors,
copied) with real bytes flipped inside the data of one tensor, as a damaged download or disk
would: as safetensors weights of the zoo entrypoint, and exported to ONNX with an initializer's
raw data flipped in the .onnx file. Both stay finite (so the NaN/Inf weight check passes them)
and predict one class for every input: 10 % top-1, chance for 10 classes. The data is a 200-sample
stratified subset of builtin:digits, preprocessed the same way, so each run takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from edgedistill.api import reference_teacher_fields
from edgedistill.cli import cli
from edgedistill.distill.objectives import check_teacher_score
from edgedistill.errors import UsageError
from edgedistill.report import html, markdown
from edgedistill.report.table import print_results
from edgedistill.zoo import DIGITS_TEACHER_WEIGHTS

TEACHER = "edgedistill.zoo:digits_teacher"
FLIPPED = 4096  # bytes XOR-ed with 0xFF at the start of one tensor's data
CAUSES = ("wrong weights", "wrong preprocessing or input normalisation", "labels in another order")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip(data: bytearray, start: int, length: int = FLIPPED) -> None:
    for i in range(start, start + length):
        data[i] ^= 0xFF


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """200 digits (20 per class) as builtin:digits preprocesses them: 1×32×32 in [0, 1]."""
    from edgedistill.data.datasets import _builtin

    x, y = _builtin("builtin:digits")
    keep = np.concatenate([np.flatnonzero(y == c)[:20] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "digits200.npz"
    np.savez(path, x=x[keep], y=y[keep])
    return path


def flipped_safetensors(path):
    """A copy of the shipped teacher with the first 4 KiB of tensor 17.weight (a 256×256 conv) flipped."""
    raw = bytearray(DIGITS_TEACHER_WEIGHTS.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])  # the safetensors layout: u64 length, JSON header, data
    begin, _ = json.loads(raw[8:8 + header_len])["17.weight"]["data_offsets"]
    flip(raw, 8 + header_len + begin)
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="module")
def healthy_onnx(tmp_path_factory):
    from edgedistill.exporters import export_onnx
    from edgedistill.zoo import digits_teacher

    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    with torch.no_grad():
        export_onnx(digits_teacher(), torch.zeros(1, 1, 32, 32), path, role="teacher")
    return path


def flipped_onnx(healthy, path):
    """The exported teacher with the first 4 KiB of its largest initializer's raw data flipped in the file."""
    import onnx

    raw = bytearray(healthy.read_bytes())
    largest = max(onnx.load(healthy).graph.initializer, key=lambda t: len(t.raw_data))
    start = raw.find(largest.raw_data)
    assert start > 0 and len(largest.raw_data) > FLIPPED, largest.name
    flip(raw, start)
    path.write_bytes(bytes(raw))
    return path


def distill_cli(tmp_path, monkeypatch, *args, toml: str = "", as_json: bool = True):
    """`edgedistill distill ARGS --epochs 1` from tmp_path; --json prints the metrics (and no notes)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgedistill.toml").write_text(toml)
    return CliRunner().invoke(cli, ["distill", *map(str, args), "--out-dir", str(tmp_path / "runs"),
                                    "--epochs", "1", *(["--json"] if as_json else [])])


def notes(result) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def in_notes(text: str, result) -> bool:
    """`text` on stderr, whitespace aside: rich folds a long path or digest mid-word at 80 columns."""
    return "".join(text.split()) in "".join(result.stderr.split())


def assert_weak_teacher_refused(result, tmp_path):
    """Exit 2, one error line naming the score, chance and the usual causes, a hint, nothing written."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    line = errors[0]
    assert "scores 10.00% top-1 on its 20 held-out validation samples" in line, line
    assert "at or near chance (10.00% for 10 classes; refused up to 2 points above it)" in line, line
    for cause in CAUSES:
        assert cause in line, (cause, line)
    assert "hint: " in result.stderr and "allow_weak_teacher = true" in result.stderr
    runs = tmp_path / "runs"
    written = [p for p in runs.rglob("*") if p.is_file()] if runs.exists() else []
    assert written == [], f"written before the refusal: {written}"


def test_reliability_30_safetensors_teacher_with_flipped_bytes_is_refused(tmp_path, monkeypatch, digits):
    """RELIABILITY 30: flipped bytes in a safetensors teacher's tensor data: exit 2 before distillation."""
    weights = flipped_safetensors(tmp_path / "teacher.safetensors")
    result = distill_cli(tmp_path, monkeypatch, "--teacher", TEACHER, "--teacher-weights", weights,
                         "--data", digits, as_json=False)
    assert_weak_teacher_refused(result, tmp_path)
    # the terminal named the weights file and its sha256 before the run stopped
    assert in_notes(f"teacher weights: {weights} sha256 {sha256(weights)}", result)


def test_reliability_30_onnx_teacher_with_flipped_initializer_is_refused(tmp_path, monkeypatch, digits,
                                                                         healthy_onnx):
    """RELIABILITY 30: flipped bytes in an ONNX teacher's initializer: exit 2; the healthy export passes."""
    bad = flipped_onnx(healthy_onnx, tmp_path / "teacher.onnx")
    result = distill_cli(tmp_path, monkeypatch, "--teacher", bad, "--data", digits, as_json=False)
    assert_weak_teacher_refused(result, tmp_path)
    assert in_notes(f"teacher weights: {bad} sha256 {sha256(bad)}", result)

    good = tmp_path / "good"
    good.mkdir()
    result = distill_cli(good, monkeypatch, "--teacher", shutil.copy(healthy_onnx, good / "teacher.onnx"),
                         "--data", digits)
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert out["teacher_val_acc"] > 0.9
    assert out["teacher_weights_sha256"] == sha256(healthy_onnx)
    assert out["teacher_weights_files"] == [{"path": str(good / "teacher.onnx"), "sha256": sha256(healthy_onnx)}]


def test_reliability_30_weak_teacher_allowed_goes_on_and_is_checked_again_on_reuse_and_resume(
        tmp_path, monkeypatch, digits):
    """RELIABILITY 30: allow_weak_teacher = true distils from it (1 epoch) and records its score and
    sha256; without it, the same run is refused again when the stage would be reused, and when a
    checkpoint would be resumed."""
    weights = flipped_safetensors(tmp_path / "teacher.safetensors")
    args = ("--teacher", TEACHER, "--teacher-weights", weights, "--data", digits)
    result = distill_cli(tmp_path, monkeypatch, *args, toml="[teacher]\nallow_weak_teacher = true\n")
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert out["teacher_val_acc"] == pytest.approx(0.10) and out["epochs"] == 1 and out["val_samples"] == 20
    assert out["teacher_weights_sha256"] == sha256(weights)
    # what bench writes to results["reference"] from these metrics
    assert reference_teacher_fields(out) == {
        "teacher_val_top1": out["teacher_val_acc"], "teacher_val_samples": 20,
        "teacher_weights_sha256": sha256(weights),
        "teacher_weights_files": [{"path": str(weights), "sha256": sha256(weights)}]}
    stage = tmp_path / "runs" / "default" / "distill"
    assert (stage / "student.safetensors").is_file()

    reused = distill_cli(tmp_path, monkeypatch, *args)  # same key: the finished stage would be reused
    assert reused.exit_code == 2 and "scores 10.00% top-1" in reused.stderr, reused.output

    (stage / "manifest.json").unlink()  # not reusable: the trainer would resume its checkpoint
    assert (stage / "checkpoint.pt").is_file()
    resumed = distill_cli(tmp_path, monkeypatch, *args, as_json=False)
    assert resumed.exit_code == 2 and "scores 10.00% top-1" in resumed.stderr, resumed.output
    assert "already trained" not in notes(resumed)  # stopped before the checkpoint was read


def test_reliability_30_healthy_teacher_passes_and_a_factory_has_no_weights_file(tmp_path, monkeypatch, digits):
    """RELIABILITY 30: the shipped teacher (copied) passes the check; without a weights file the
    record says so."""
    weights = shutil.copy(DIGITS_TEACHER_WEIGHTS, tmp_path / "teacher.safetensors")
    result = distill_cli(tmp_path, monkeypatch, "--teacher", TEACHER, "--teacher-weights", weights,
                         "--data", digits)
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert out["teacher_val_acc"] >= 0.95 and out["teacher_weights_sha256"] == sha256(DIGITS_TEACHER_WEIGHTS)

    # Another run in the same --out-dir: the teacher (same weights) is found in its output cache.
    result = distill_cli(tmp_path, monkeypatch, "--teacher", TEACHER, "--data", digits, "--run-name", "factory",
                         as_json=False)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "teacher weights: none (factory's own initialisation)" in notes(result)
    assert "validation top-1: teacher 100.00%" in notes(result)


@pytest.mark.parametrize(("score", "classes", "refused"), [
    (0.10, 10, True), (0.12, 10, True), (0.1201, 10, False), (0.0, 10, True),  # below chance: labels permuted
    (0.52, 2, True), (0.53, 2, False), (0.99, 10, False),
])
def test_reliability_30_chance_is_within_2_points_of_one_over_classes(score, classes, refused):
    """RELIABILITY 30: at, below or within 2 points above 1/classes is refused; anything better passes."""
    if refused:
        expected = rf"at or near chance \({100 / classes:.2f}% for {classes} classes; refused up to 2 points"
        with pytest.raises(UsageError, match=expected):
            check_teacher_score(score, classes, 100, allow=False)
    else:
        check_teacher_score(score, classes, 100, allow=False)
    check_teacher_score(score, classes, 100, allow=True)  # allowed: never raises


def test_reliability_30_reports_show_the_teachers_validation_score_and_weights_sha256():
    """RELIABILITY 30: a 46 % teacher passes the check; the reports show its score and weights
    so a reader can tell; an entrypoint without a weights file says so; older files say "not recorded"."""
    digest = "ab" * 32
    ref = {"teacher_top1": 0.46, "test_samples": 359, "teacher_val_top1": 0.4611, "teacher_val_samples": 180,
           "teacher_weights_sha256": digest,
           "teacher_weights_files": [{"path": "teacher.onnx", "sha256": digest}]}
    results = {"schema": "edgedistill.results/2", "run": "r", "verdict": "PASS", "environment": {},
               "reference": ref, "targets": [], "checks": []}
    md, page = markdown.render(results), html.render(results)
    terminal = io.StringIO()
    print_results(results, Console(file=terminal, width=300))
    for text in ("46.11 % on 180 samples", f"teacher.onnx sha256 {digest}"):
        assert text in md and text in page and text in terminal.getvalue(), text
    ref.update(teacher_weights_sha256=None, teacher_weights_files=[])
    assert "none (factory's own initialisation)" in markdown.render(results)
    assert "none (factory&#x27;s own initialisation)" in html.render(results)
    old = {**results, "reference": {"teacher_top1": 0.99, "test_samples": 359}}
    assert markdown.render(old).count("not recorded") == 2


def test_reliability_30_every_ddp_rank_stops_on_a_weak_teacher(tmp_path, digits, cli_env):
    """RELIABILITY 30 under DDP: 2 worker processes; rank 0's score decides, every rank stops (no
    hang in a collective), the launcher exits 2 with the message."""
    from conftest import run_cli

    weights = flipped_safetensors(tmp_path / "teacher.safetensors")
    r = run_cli(["distill", "--teacher", TEACHER, "--teacher-weights", weights, "--data", digits,
                 "--epochs", "1", "--nproc-per-node", "2", "--out-dir", tmp_path / "runs"], cwd=tmp_path,
                env=cli_env, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "scores 10.00% top-1 on its 20 held-out validation samples" in r.stderr
    assert not (tmp_path / "runs" / "default" / "distill" / "student.safetensors").exists()
