"""A text model with named integer inputs through `compress`, end to end (issue 12 item 4).

The user's own text classifier (an entrypoint, not hf:) takes `input_ids` and `attention_mask`
(int64, N×L); the data is an .npz with one array per input name. Distillation, export to every
CPU backend (FP32 and INT8), verification against PyTorch and the benchmark all see both inputs
with their dtype; the ONNX graph keeps the names with dynamic batch and sequence axes.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_cli

from edgedistill.artifacts import Artifact
from edgedistill.config import DataConfig
from edgedistill.data import calibration_subset, load_data

VOCAB, LENGTH, N = 40, 12, 360

MODELS = '''
import torch

VOCAB = 40


class MaskedMean(torch.nn.Module):
    """Token embeddings averaged over the positions the mask keeps, then a head: padding
    (token 0) would change the answer if the mask were dropped."""

    def __init__(self, width):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, width)
        self.head = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))

    def forward(self, input_ids, attention_mask):
        keep = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(input_ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)


def teacher():
    torch.manual_seed(0)
    return MaskedMean(32)


def student():
    torch.manual_seed(1)
    return MaskedMean(8)
'''


def tiny_target(backends: str, budgets: str = "") -> str:
    """A probe target for a test: a short measurement that a busy machine does not invalidate."""
    return textwrap.dedent(f"""
        backends = {backends}
        [budgets]
        p90_ms = 10000
        {budgets}
        [measurement]
        warmup_iterations = 2
        min_iterations = 20
        min_duration_s = 0.05
        cold_runs = 1
        measure_cache = false
        max_load_per_core = 1000
        max_others_cpu_share = 1
        allow_unstable_clocks = true
    """)


def text_data(path, n=N, seed=0):
    """Sentences of 3..LENGTH tokens padded with 0; the label: are most kept tokens < VOCAB/2?"""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, LENGTH + 1, size=n)
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, size=(n, LENGTH)) * mask
    low = ((ids > 0) & (ids < VOCAB // 2)).sum(1) * 2 > mask.sum(1)
    np.savez(path, input_ids=ids.astype(np.int64), attention_mask=mask, y=low.astype(np.int64))
    return path


def test_named_integer_inputs_keep_their_dtype_through_the_splits(tmp_path):
    splits = load_data(DataConfig(spec=str(text_data(tmp_path / "text.npz"))), seed=0)
    assert list(splits.x_train) == ["input_ids", "attention_mask"]
    assert splits.input_shape == {"input_ids": (LENGTH,), "attention_mask": (LENGTH,)}
    assert all(t.dtype == __import__("torch").int64 for t in splits.x_test.values())
    calibration = calibration_subset(splits, 16, seed=0)
    assert set(calibration) == {"input_ids", "attention_mask"}
    assert calibration["input_ids"].dtype == np.int64 and calibration["input_ids"].shape == (16, LENGTH)
    # the same rows of every input: a sample's mask still fits its ids
    np.testing.assert_array_equal(calibration["input_ids"] == 0, calibration["attention_mask"] == 0)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One `compress` of the text model: 6 epochs of a tiny student, every CPU backend, FP32 and INT8."""
    tmp = tmp_path_factory.mktemp("text")
    (tmp / "text_models.py").write_text(MODELS)
    text_data(tmp / "text.npz")
    # The teacher is trained here first (a few seconds), so that the distilled student has
    # something to learn and the weak-teacher check passes on merit.
    train = textwrap.dedent("""
        import numpy as np, torch
        from safetensors.torch import save_file
        from text_models import teacher
        d = np.load("text.npz"); model = teacher()
        ids, mask, y = (torch.from_numpy(d[k]) for k in ("input_ids", "attention_mask", "y"))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for step in range(300):
            opt.zero_grad(); torch.nn.functional.cross_entropy(model(ids, mask), y).backward(); opt.step()
        save_file(model.state_dict(), "teacher.safetensors")
    """)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", train], cwd=tmp, env=env, check=True, timeout=300)
    (tmp / "edgedistill.toml").write_text(textwrap.dedent("""
        [run]
        name = "text"
        [teacher]
        spec = "text_models:teacher"
        weights = "teacher.safetensors"
        [student]
        spec = "text_models:student"
        [data]
        spec = "text.npz"
        [distill]
        epochs = 6
        batch_size = 32
        lr = 3e-2
        threads = 1
        [compress]
        precisions = ["fp32", "int8"]
        calibration_samples = 32
        [export]
        backends = ["onnxruntime", "openvino", "executorch"]
        benchmark_teacher = false
        min_top1_agreement = {fp32 = 0.99, int8 = 0.9}
        [bench]
        targets = ["tiny.toml"]
    """))
    (tmp / "tiny.toml").write_text(tiny_target('["onnxruntime", "openvino"]', "accuracy_drop_pt = 40"))
    result = run_cli(["compress", "--json"], cwd=tmp, env=env)
    return tmp, result


def test_compress_runs_a_text_model_on_every_cpu_backend(text_run):
    tmp, result = text_run
    assert result.returncode in (0, 4), result.stderr[-3000:]  # 4: this shared machine was busy
    run = tmp / "runs" / "text"
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    artifacts = {Artifact.from_json(a).name: a for a in manifest["artifacts"]}
    for backend in ("onnxruntime", "openvino", "executorch"):
        for precision in ("fp32", "int8"):
            art = artifacts[f"student-{precision}-{backend}"]
            assert art["meta"]["verification"]["verified"], art["meta"]["verification"]
            assert art["meta"]["verification"]["samples"] == 72  # every held-out sample, both inputs
    # The held-out inputs kept their names and dtype.
    with np.load(run / "data" / "test_inputs.npz") as held_out:
        assert held_out.files == ["input_ids", "attention_mask"]
        assert held_out["input_ids"].dtype == np.int64
    # The ONNX graph takes both inputs by name, batch and sequence dynamic.
    graph = onnx.load(run / "export" / "intermediate" / "student.onnx").graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert all(isinstance(d, str) for dims in inputs.values() for d in dims), inputs
    assert artifacts["student-fp32-openvino"]["meta"]["dynamic_sequence"] is True
    assert [i["name"] for i in artifacts["student-int8-onnxruntime"]["meta"]["inputs"]] == list(inputs)
    # ExecuTorch plans memory ahead: batch 1 and the data's sequence length, recorded.
    assert [i["shape"] for i in artifacts["student-fp32-executorch"]["meta"]["inputs"]] == [[1, LENGTH]] * 2
    results = json.loads((run / "results.json").read_text())
    measured = {r["artifact"]: r for t in results["targets"] for r in t["results"]}
    assert {"student-fp32-onnxruntime", "student-int8-openvino"} <= set(measured)
    for r in measured.values():
        assert r["accuracy"]["n"] == 72 and r["accuracy"]["top1"] > 0.6, r["accuracy"]
    for backend in ("onnxruntime", "openvino", "executorch"):  # calibrated on both inputs
        assert artifacts[f"student-int8-{backend}"]["meta"]["calibration_samples"] == 32


# ---------------------------------------------------------------- a Hugging Face BERT


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """`compress` of a tiny random BERT classifier (hf:<folder>, built offline) into shallow:2,
    with input_ids, attention_mask and token_type_ids; the labels are the teacher's own answers,
    so the teacher is right by construction and the student has something to learn."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (edgedistill[hf])")
    import torch

    tmp = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=32, num_labels=2, max_position_embeddings=32)
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config).eval()
    bert.save_pretrained(tmp / "bert")
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, LENGTH + 1, size=N)
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, size=(N, LENGTH)) * mask
    types = ((np.arange(LENGTH)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int64)  # a second segment
    with torch.no_grad():
        logits = bert(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      token_type_ids=torch.from_numpy(types)).logits
    np.savez(tmp / "text.npz", input_ids=ids, attention_mask=mask, token_type_ids=types,
             y=logits.argmax(1).numpy())
    (tmp / "edgedistill.toml").write_text(textwrap.dedent("""
        [run]
        name = "bert"
        [teacher]
        spec = "hf:bert"
        [student]
        spec = "shallow:2"
        [data]
        spec = "text.npz"
        [distill]
        epochs = 2
        threads = 1
        [compress]
        precisions = ["fp32", "int8"]
        calibration_samples = 32
        [export]
        # Not ExecuTorch: its INT8 (PT2E) calibration of a transformers BERT fails inside the
        # attention-mask code (IndexError, reported in one line); the text test above covers it.
        backends = ["onnxruntime", "openvino"]
        benchmark_teacher = false
        allow_unverified = true
        [bench]
        targets = ["tiny.toml"]
    """))
    (tmp / "tiny.toml").write_text(tiny_target('["onnxruntime"]'))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return tmp, run_cli(["compress", "--json"], cwd=tmp, env=env)


def test_compress_runs_a_hugging_face_bert_with_its_three_inputs(bert_run):
    tmp, result = bert_run
    assert result.returncode in (0, 4), result.stderr[-3000:]
    run = tmp / "runs" / "bert"
    graph = onnx.load(run / "export" / "intermediate" / "student.onnx").graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    artifacts = {Artifact.from_json(a).name: a for a in manifest["artifacts"]}
    fp32 = artifacts["student-fp32-onnxruntime"]["meta"]
    assert fp32["verification"]["verified"] and fp32["verification"]["max_abs"] < 1e-4
    # Dynamic where the exporter could keep it so; else the data's length, recorded.
    assert fp32["dynamic_sequence"] in (True, False)
    assert all(i["shape"][1] == (None if fp32["dynamic_sequence"] else LENGTH) for i in fp32["inputs"])
    assert artifacts["student-fp32-openvino"]["meta"]["verification"]["verified"]
    assert artifacts["student-int8-onnxruntime"]["meta"]["calibration_samples"] == 32
    # onnxruntime's symbolic shape inference gives up on BERT's dynamic sequence and dumps its
    # half-inferred model in the current folder; the quantization retried without it and left nothing.
    assert sorted(p.name for p in tmp.iterdir() if p.suffix in (".onnx", ".data")) == []
    results = json.loads((run / "results.json").read_text())
    measured = [r for t in results["targets"] for r in t["results"]]
    assert {r["artifact"] for r in measured} == {"student-fp32-onnxruntime", "student-int8-onnxruntime"}
    assert all(r["accuracy"]["n"] == 72 for r in measured)
