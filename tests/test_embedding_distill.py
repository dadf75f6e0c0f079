"""Embedding distillation (distill.objective = "embedding"): loss, validation by cosine,
shape checks, resume, NaN stop, teacher cache, export verification (compress end to end: test_quality_e2e.py)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors import safe_open
from test_distill import LossCalls
from torch import nn

from edgedistill.config import Config, DataConfig, DistillConfig, FeaturePair, validate
from edgedistill.data import load_data
from edgedistill.distill import trainer
from edgedistill.distill.objectives import mean_cosine
from edgedistill.distill.teacher_cache import predict, teacher_logits
from edgedistill.distill.trainer import distill
from edgedistill.errors import (
    ConfigError,
    ModelMismatchError,
    UsageError,
    VerificationError,
)

EMB = DistillConfig(objective="embedding", epochs=8, batch_size=32, lr=3e-2, threads=1)

MODELS = '''
import torch

def _mlp(hidden, out, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))

def teacher():
    return _mlp(32, 16, 0)

def student():
    return _mlp(12, 16, 1)

def student_8d():
    return _mlp(12, 8, 1)
'''


def mlp(hidden: int, out: int = 16, seed: int = 0, inputs: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, out))


def embedding_splits(path, shape=(8,), seed=0):
    """300 samples of random features; the labels only decide the stratified split."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(300, *shape)).astype(np.float32), y=np.arange(300) % 3)
    return load_data(DataConfig(spec=str(path)), seed=0)


@pytest.fixture
def splits(tmp_path):
    return embedding_splits(tmp_path / "emb.npz")


def run(tmp_path, splits, cfg=EMB, teacher=None, student=None, name="run"):
    return distill(teacher or mlp(32, seed=0), student or mlp(12, seed=1), splits, cfg, tmp_path / name,
                   seed=0, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- training


def test_distilled_student_is_much_closer_to_the_teacher_than_a_fresh_one(tmp_path, splits):
    teacher = mlp(32, seed=0)
    reference = predict(teacher, splits.x_val)
    fresh = mean_cosine(predict(mlp(12, seed=1), splits.x_val), reference)
    result = run(tmp_path, splits, teacher=teacher)

    distilled = mean_cosine(predict(result.student, splits.x_val), reference)
    assert distilled == pytest.approx(result.student_val_cosine, abs=1e-6)  # the best epoch is what is kept
    # Measured: -0.23 fresh, 0.876 after 8 epochs (a 12-unit student cannot copy a 32-unit teacher exactly).
    assert fresh < 0.3 and distilled > 0.8 and distilled - fresh > 0.5, (fresh, distilled)
    assert result.teacher_val_acc is None and result.student_val_acc is None  # no classes to score
    history = result.history
    assert result.student_val_cosine == max(h["val_cosine"] for h in history)
    assert {"loss", "mse", "cosine", "val_cosine"} <= set(history[0])
    assert not {"kd", "ce", "val_acc"} & set(history[0])
    assert history[-1]["mse"] < history[0]["mse"] and history[-1]["cosine"] < history[0]["cosine"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["val_cosine"] for h in lines] == [h["val_cosine"] for h in history]
    with safe_open(result.weights_path, framework="pt") as f:
        assert json.loads(f.metadata()["edgedistill"])["val_cosine"] == result.student_val_cosine


def test_term_weights_are_applied(tmp_path, splits):
    cfg = EMB.model_copy(update={"epochs": 1, "embedding_mse_weight": 0.0, "embedding_cosine_weight": 2.0})
    (record,) = run(tmp_path, splits, cfg).history
    assert record["mse"] > 0  # still logged, weighted 0
    assert record["loss"] == pytest.approx(2.0 * record["cosine"], rel=1e-6)


def test_hint_losses_combine_with_the_embedding_objective(tmp_path, splits):
    cfg = EMB.model_copy(update={"epochs": 1, "features": [FeaturePair(student="1", teacher="1", weight=0.5)]})
    (record,) = run(tmp_path, splits, cfg).history
    assert record["feature"] > 0 and record["loss"] > record["mse"] + record["cosine"]


def test_token_embeddings_train_and_reuse_the_teacher_cache(tmp_path):
    splits = embedding_splits(tmp_path / "tokens.npz", shape=(5, 8))  # N×L×F -> N×L×16
    teacher, cfg = mlp(32, seed=0), EMB.model_copy(update={"epochs": 2})
    result = run(tmp_path, splits, cfg, teacher=teacher)
    assert result.student_val_cosine > 0.5
    assert len(list((tmp_path / "cache").glob("teacher-logits-*.safetensors"))) == 1
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    outputs = teacher_logits(teacher, splits, tmp_path / "cache")
    assert outputs.shape == (len(splits.x_train), 5, 16) and calls == []  # read back, not recomputed


def test_non_finite_teacher_embedding_stops_the_run_naming_it(tmp_path, splits):
    """RELIABILITY 14: Inf teacher outputs stop the run at step 1, naming the tensor; no weights written."""
    class Overflowing(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], dim=1) * float("inf")

    with pytest.raises(UsageError, match=r"epoch 1/8, step 1: teacher embeddings not finite"):
        run(tmp_path, splits, teacher=Overflowing(), student=mlp(12, out=16, seed=1))
    assert not (tmp_path / "run" / "student.safetensors").exists()


# ---------------------------------------------------------------- checks and config


def test_shape_mismatch_is_refused_before_training(tmp_path, splits):
    with pytest.raises(ModelMismatchError, match=r"teacher outputs \(batch, 16\), student \(batch, 8\)"):
        run(tmp_path, splits, teacher=mlp(32, out=16), student=mlp(12, out=8))
    with pytest.raises(ModelMismatchError, match=r"\(batch, D\) or \(batch, L, D\), found \(32,\)"):
        run(tmp_path, splits, teacher=nn.Sequential(mlp(32), nn.Flatten(0)))
    assert not (tmp_path / "run").exists()


def test_config_validates_objective_and_weights():
    assert DistillConfig().objective == "logits"
    with pytest.raises(ConfigError, match="embedding_mse_weight \\+ embedding_cosine_weight must be > 0"):
        validate(Config, {"distill": {"embedding_mse_weight": 0, "embedding_cosine_weight": 0}}, "cfg")
    with pytest.raises(ConfigError, match="distill.objective"):
        validate(Config, {"distill": {"objective": "embeddings"}}, "cfg")


# ---------------------------------------------------------------- resume


def test_run_key_separates_objectives_and_weights(splits):
    teacher, student = mlp(32), mlp(12, seed=1)
    keys = {
        trainer._run_key(teacher, student, splits, cfg, 0)
        for cfg in (DistillConfig(), EMB, EMB.model_copy(update={"embedding_mse_weight": 0.5}),
                    EMB.model_copy(update={"restart": True}))  # bookkeeping: same run
    }
    assert len(keys) == 3


def test_interrupted_embedding_run_resumes_to_identical_weights(tmp_path, splits, monkeypatch):
    straight = run(tmp_path, splits, name="a")
    steps = LossCalls(monkeypatch, "embedding_loss", stop_at=10)  # in epoch 2 (7 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, splits, name="b")
    steps.count_from_zero()
    resumed = run(tmp_path, splits, name="b")
    assert steps.calls == 7 * (len(straight.history) - 1)  # epoch 1 came from the checkpoint
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.student_val_cosine == straight.student_val_cosine
    for key, value in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[key], value), key


# ---------------------------------------------------------------- export verification


def test_export_verification_of_an_embedding_uses_cosine(tmp_path):
    from edgedistill.api import _verify
    from edgedistill.backends.base import get_backend
    from edgedistill.exporters import export_onnx

    model, x = mlp(12, seed=1).eval(), torch.randn(20, 8)
    onnx_file = export_onnx(model, x[:1], tmp_path / "student.onnx", role="student", dynamic_batch=True)
    art = get_backend("onnxruntime").export(onnx_file, tmp_path / "ort", precision="fp32", calibration=None)
    np.save(tmp_path / "inputs.npy", x.numpy())
    reference = predict(model, x).numpy()
    cfg = Config()
    report = _verify(art, tmp_path / "inputs.npy", reference, cfg, tmp_path, embedding=True)
    assert "top1_agreement" not in report and report["min_cosine"] > 0.9999 and report["max_abs"] < 1e-4
    logits = _verify(art, tmp_path / "inputs.npy", reference, cfg, tmp_path)  # the logits path is unchanged
    assert logits["top1_agreement"] == 1.0 and "mean_cosine" not in logits
    with pytest.raises(VerificationError, match="mean cosine"):
        _verify(art, tmp_path / "inputs.npy", -reference, cfg.model_copy(update={"export": cfg.export.model_copy(
            update={"fp32_max_abs": 1e3})}), tmp_path, embedding=True)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def project(tmp_path):
    (tmp_path / "embmodels.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "emb.npz", x=rng.normal(size=(300, 8)).astype(np.float32), y=np.arange(300) % 3)
    return tmp_path, {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def write_config(folder, student="embmodels:student"):
    (folder / "edgedistill.toml").write_text(
        f'[teacher]\nspec = "embmodels:teacher"\n[student]\nspec = "{student}"\n[data]\nspec = "emb.npz"\n'
        '[distill]\nobjective = "embedding"\nepochs = 6\nbatch_size = 32\nlr = 0.03\nthreads = 1\n'
    )


def test_cli_distills_an_embedding_student_and_records_its_cosine(project):
    tmp, env = project
    write_config(tmp)
    r = run_cli(["distill", "--json"], cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["objective"] == "embedding" and out["epochs"] == 6
    assert 0.7 < out["student_val_cosine"] <= 1  # a fresh student is near 0 (see the test above)
    assert "teacher_val_acc" not in out


def test_cli_shape_mismatch_exits_2_naming_both_shapes(project):
    tmp, env = project
    write_config(tmp, student="embmodels:student_8d")
    started = time.monotonic()
    r = run_cli(["distill"], cwd=tmp, env=env)
    assert r.returncode == 2, r.stderr
    assert "teacher outputs (batch, 16), student (batch, 8)" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "runs/default/distill/student.safetensors").exists()
    assert time.monotonic() - started < 60
