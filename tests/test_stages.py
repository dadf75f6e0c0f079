"""Reused stages: a manifest records each output's sha256 and size, and a stage whose outputs
changed on disk is redone, never reused as verified (RELIABILITY 27)."""

import json
import time

import numpy as np
from conftest import run_cli

from edgedistill.artifacts import sha256_file
from edgedistill.stages import Stage, recorded_by_pipeline


def _committed(tmp_path, data=b"model bytes"):
    stage = Stage(tmp_path, "export", key="k1")
    out = stage.begin()
    (out / "sub").mkdir()
    model = out / "sub" / "model.onnx"
    model.write_bytes(data)
    stage.commit([model])
    return stage, model


def test_reliability_27_manifest_records_sha256_and_size(tmp_path):
    stage, model = _committed(tmp_path)
    (entry,) = json.loads(stage.manifest_path.read_text())["files"]
    assert entry == {"path": str(model), "sha256": sha256_file(model), "size": model.stat().st_size}
    assert Stage(tmp_path, "export", key="k1").cached() is not None


def test_reliability_27_a_flipped_byte_of_the_same_size_is_not_reused(tmp_path):
    _, model = _committed(tmp_path)
    data = bytearray(model.read_bytes())
    data[3] ^= 0xFF
    model.write_bytes(bytes(data))
    again = Stage(tmp_path, "export", key="k1")
    assert again.cached() is None
    assert "changed on disk" in again.changed and str(model) in again.changed


def test_reliability_27_truncated_missing_or_unhashed_outputs_are_not_reused(tmp_path):
    stage, model = _committed(tmp_path)
    model.write_bytes(b"model")
    assert stage.cached() is None and "changed size" in stage.changed
    model.unlink()
    assert stage.cached() is None and "missing" in stage.changed
    # A manifest of the older format (paths only) proves nothing about the bytes.
    stage.manifest_path.write_text(json.dumps({"key": "k1", "files": [str(model)]}))
    assert stage.cached() is None and "without sha256" in stage.changed
    # Another key is simply another stage: no "changed" reason.
    assert Stage(tmp_path, "export", key="k2").cached() is None


def test_recorded_by_pipeline_only_for_listed_unchanged_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, model = _committed("runs")  # recorded relative to the folder it ran in, as the pipeline does
    model = tmp_path / model
    monkeypatch.chdir("/")
    assert recorded_by_pipeline(model)
    stranger = model.with_name("other.onnx")
    stranger.write_bytes(b"model bytes")  # same bytes, but no manifest lists this path
    assert not recorded_by_pipeline(stranger)
    model.write_bytes(b"model bytez")
    assert not recorded_by_pipeline(model)


def test_reliability_27_export_redoes_a_stage_whose_verified_artifact_was_flipped(tmp_path):
    """A byte flipped inside an exported, verified model: the next run says so, exports and
    verifies again, and the file on disk is again the one the manifest records."""
    # The student alone (no teacher export) and fp32 alone: one artifact is enough to flip.
    (tmp_path / "edgedistill.toml").write_text('[export]\nbenchmark_teacher = false\n[compress]\nprecisions = ["fp32"]\n')
    args = ["export", "--epochs", "1", "--backend", "onnxruntime", "--out-dir", "runs", "--run-name", "r27"]
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    manifest_path = tmp_path / "runs/r27/export/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    art = next(a for a in manifest["artifacts"] if a["role"] == "student" and a["precision"] == "fp32")
    path = tmp_path / art["path"]
    data = bytearray(open(path, "rb").read())
    # Flip bytes in the middle (tensor data), keeping the size: existence and size both still match.
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0x5A for b in data[mid:mid + 8])
    open(path, "wb").write(bytes(data))
    time.sleep(0.01)
    second = run_cli(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    log = second.stdout + second.stderr
    assert "redoing it" in log and "changed on disk" in log and "reusing the verified" not in log
    redone = json.loads(manifest_path.read_text())
    assert redone["finished"] > manifest["finished"]
    entry = next(f for f in redone["files"] if f["path"] == art["path"])
    assert sha256_file(path) == entry["sha256"]
    assert bytes(data) != open(path, "rb").read()
    third = run_cli(args, cwd=tmp_path)
    assert "reusing the verified" in third.stdout + third.stderr
    assert np.isfinite(redone["artifacts"][0]["meta"]["verification"]["max_abs"])
