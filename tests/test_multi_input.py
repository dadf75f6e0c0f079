"""Models with several named inputs through the real runtimes and real probe processes.

Two tiny models are built here: a text-like model (`input_ids` and `attention_mask`, both
int64, batch and sequence dynamic) and one with mixed inputs (`features` float32 and `ids` int64).
Each goes to ONNX (torch.onnx.export, dynamo=True), to an OpenVINO IR (convert_model +
save_model from that ONNX) and to a .pte (torch.export + XNNPACK, static batch 1), and through
every probe mode on ONNX Runtime, OpenVINO (the .onnx and the .xml) and ExecuTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.bench.runners.local import run_probe

N = 12  # samples in every inputs file
SEQ = 16
VOCAB = 50
RUNTIMES = ["onnxruntime", "openvino-onnx", "openvino-ir", "executorch"]
MAX_ABS = 1e-4  # fp32 everywhere


class TextNet(torch.nn.Module):
    """Mean of the token embeddings the mask keeps, then a linear head: the mask matters."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(input_ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)


class MixedNet(torch.nn.Module):
    """A float input and an integer one, both needed for the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.emb = torch.nn.Embedding(VOCAB, 3)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.lin(features) + self.emb(ids).sum(1)


def _text_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(0, VOCAB, size=(n, SEQ)).astype(np.int64), "attention_mask": mask}


def _mixed_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(n, 4)).astype(np.float32),
            "ids": rng.integers(0, VOCAB, size=(n, 2)).astype(np.int64)}


@dataclass
class Built:
    """One model's files, inputs files and the torch reference outputs."""

    names: list[str]
    dtypes: list[str]
    files: dict[str, Path]  # "onnx", "xml", "pte"
    inputs: dict[str, np.ndarray]
    npz: Path  # keyed by the model's input names
    npz_pte: Path  # keyed input_0, input_1, ... (a .pte keeps no names)
    reference: np.ndarray
    pte_shapes: list[list[int]] = field(default_factory=list)


def _build(kind: str, folder: Path) -> Built:
    import openvino as ov
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    model = (TextNet() if kind == "text" else MixedNet()).eval()
    inputs = _text_inputs(N, seed=1) if kind == "text" else _mixed_inputs(N, seed=1)
    names = list(inputs)
    example = tuple(torch.from_numpy(inputs[n][:2]) for n in names)
    batch = torch.export.Dim("batch")
    if kind == "text":
        seq = torch.export.Dim("seq")
        dynamic = {n: {0: batch, 1: seq} for n in names}
    else:
        dynamic = {n: {0: batch} for n in names}
    onnx_path = folder / f"{kind}.onnx"
    torch.onnx.export(model, example, str(onnx_path), dynamo=True, input_names=names,
                      dynamic_shapes=dynamic, verbose=False)
    xml = folder / f"{kind}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    single = tuple(t[:1] for t in example)
    program = to_edge_transform_and_lower(torch.export.export(model, single),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    pte = folder / f"{kind}.pte"
    pte.write_bytes(program.buffer)
    with torch.no_grad():
        reference = model(*(torch.from_numpy(inputs[n]) for n in names)).numpy()
    npz, npz_pte = folder / f"{kind}.npz", folder / f"{kind}-pte.npz"
    np.savez(npz, **inputs)
    np.savez(npz_pte, **{f"input_{i}": inputs[n] for i, n in enumerate(names)})
    return Built(names, [str(inputs[n].dtype) for n in names], {"onnx": onnx_path, "xml": xml, "pte": pte},
                 inputs, npz, npz_pte, reference, [[1, *inputs[n].shape[1:]] for n in names])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build each model once per module, on first use."""
    done: dict[str, Built] = {}

    def get(kind: str) -> Built:
        if kind not in done:
            done[kind] = _build(kind, tmp_path_factory.mktemp(kind))
        return done[kind]

    return get


def _backend_and_file(runtime: str, b: Built) -> tuple[str, Path, Path]:
    """(backend, model file, inputs file) for one of RUNTIMES."""
    return {
        "onnxruntime": ("onnxruntime", b.files["onnx"], b.npz),
        "openvino-onnx": ("openvino", b.files["onnx"], b.npz),
        "openvino-ir": ("openvino", b.files["xml"], b.npz),
        "executorch": ("executorch", b.files["pte"], b.npz_pte),
    }[runtime]


def _request(backend: str, model: Path, inputs: Path | None, mode: str, out: Path, **extra) -> dict:
    return {"backend": backend, "model": str(model), "precision": "fp32", "threads": 1, "device": "CPU",
            "inputs": str(inputs) if inputs else None, "mode": mode, "outputs_path": str(out),
            "warmup_iterations": 2, "min_iterations": 20, "min_duration_s": 0.01, "max_duration_s": 10,
            **extra}


def _probe(req: dict):
    return run_probe(req, threads=1, timeout_s=300)


# ExecuTorch's Python runtime imports torch in each probe (~12 s each here): it runs the text
# model in describe and outputs mode only; the native runner's tests (and verification, which it
# runs) feed a 2-input .pte in every mode.
@pytest.mark.parametrize(("runtime", "kind"), [(r, k) for r in RUNTIMES for k in ("text", "mixed")
                                               if not (r == "executorch" and k == "mixed")])
def test_every_probe_mode_feeds_every_input(built, tmp_path, kind, runtime):
    b = built(kind)
    backend, model, inputs = _backend_and_file(runtime, b)
    pte = backend == "executorch"
    out = tmp_path / "out.npy"

    # describe: the names, shapes (None for dynamic) and dtypes, nothing run
    d = _probe(_request(backend, model, None, "describe", out))
    assert d.status == "ok", d.detail
    names = [f"input_{i}" for i in range(len(b.names))] if pte else b.names
    assert [i["name"] for i in d.result["inputs"]] == names
    assert [i["dtype"] for i in d.result["inputs"]] == b.dtypes
    if pte:
        assert [i["shape"] for i in d.result["inputs"]] == b.pte_shapes
    else:
        dynamic = [None, None] if kind == "text" else None
        for spec, arr in zip(d.result["inputs"], b.inputs.values()):
            assert spec["shape"][0] is None  # the dynamic batch
            assert spec["shape"] == (dynamic or [None, *arr.shape[1:]])
    assert [o["dtype"] for o in d.result["outputs"]][:1] == ["float32"]
    assert "first_inference_ms" not in d.result["cold"] and not out.exists()

    # outputs: every sample, all inputs sliced alike, equal to torch's
    o = _probe(_request(backend, model, inputs, "outputs", out))
    assert o.status == "ok", o.detail
    got = np.load(out)
    assert got.shape == b.reference.shape == (N, 3)
    assert np.abs(got - b.reference).max() < MAX_ABS
    if pte:
        return

    cold = _probe(_request(backend, model, inputs, "cold", out))
    assert cold.status == "ok", cold.detail
    assert cold.result["cold"]["first_inference_ms"] > 0 and "warm" not in cold.result
    assert cold.result["first_output_shape"] == [1, 3]

    # full: warm loop, sampled-outputs check and the same-input caching check
    full = _probe(_request(backend, model, inputs, "full", out))
    assert full.status == "ok", full.detail
    warm = full.result["warm"]
    assert len(warm["samples_ms"]) >= 20 and len(warm["same_input_samples_ms"]) >= 50
    assert len(warm["same_input_varied_ms"]) >= 50
    sampled = full.result["sampled_outputs"]
    assert sampled["checked"] >= 1 and sampled["argmax_mismatches"] == 0 and sampled["max_abs_diff"] < MAX_ABS

    # warm at batch 3: every input sliced alike (a fixed batch's refusal: test_a_fixed_batch_on_any_input_...)
    w = _probe(_request(backend, model, inputs, "warm", out, batch_size=3, same_input=True))
    assert w.status == "ok", w.detail
    assert w.result["first_output_shape"] == [3, 3] and w.result["batch_size"] == 3
    assert len(w.result["warm"]["samples_ms"]) >= 20 and w.result["warm"]["same_input_samples_ms"]


def test_openvino_reshapes_to_the_requested_shapes_before_compiling(built, tmp_path):
    """Request "shapes" (benchmark_app's -shape): the dynamic dims of the .onnx become static in
    the compiled model, every mode runs at those shapes, and the now fixed batch refuses a sweep."""
    b = built("text")
    shapes = {"input_ids": [1, SEQ], "attention_mask": [1, SEQ]}
    out = tmp_path / "out.npy"
    for model in (b.files["onnx"], b.files["xml"]):
        d = _probe(_request("openvino", model, None, "describe", out, shapes=shapes))
        assert d.status == "ok", d.detail
        assert [i["shape"] for i in d.result["inputs"]] == [[1, SEQ], [1, SEQ]]
        o = _probe(_request("openvino", model, b.npz, "outputs", out, shapes=shapes))
        assert o.status == "ok", o.detail
        assert np.abs(np.load(out) - b.reference).max() < MAX_ABS
    w = _probe(_request("openvino", b.files["onnx"], b.npz, "warm", out, shapes=shapes, batch_size=2))
    assert w.status == "error" and w.result["error_type"] == "UnsupportedBatch"
    bad = _probe(_request("openvino", b.files["onnx"], None, "describe", out, shapes={"input_idz": [1, SEQ]}))
    assert bad.status == "error" and "input_idz" in bad.detail and "input_ids" in bad.detail


def test_inputs_file_names_that_do_not_fit_the_model_are_named(built, tmp_path):
    """The probe's own check (the harness checks with a table before): a missing and an
    unexpected name, and inputs with different sample counts."""
    b = built("mixed")
    out = tmp_path / "out.npy"
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=b.inputs["features"], idz=b.inputs["ids"])
    r = _probe(_request("onnxruntime", b.files["onnx"], wrong, "outputs", out))
    assert r.status == "error" and "missing ['ids'], unexpected ['idz']" in r.detail
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, features=b.inputs["features"], ids=b.inputs["ids"][:5])
    r = _probe(_request("onnxruntime", b.files["onnx"], uneven, "outputs", out))
    assert r.status == "error" and "same number of samples" in r.detail and not out.exists()


def _target(**measurement):
    from edgedistill.config import TargetConfig

    # Small and lenient about the shared test machine: these tests check the harness's plumbing
    # of several inputs, not how busy the machine is.
    m = {"warmup_iterations": 2, "min_iterations": 100, "min_duration_s": 0.05, "max_duration_s": 10,
         "cold_runs": 2, "timeout_s": 300, "max_others_cpu_share": 1.0, "max_load_per_core": 100.0,
         "allow_unstable_clocks": True, **measurement}
    return TargetConfig(name="t", measurement=m)


def test_describe_model_returns_names_shapes_and_dtypes(built):
    from edgedistill.artifacts import Artifact
    from edgedistill.bench.harness import describe_model

    b = built("text")
    art = Artifact("onnx", b.files["onnx"], "fp32", "student", "onnxruntime")
    d = describe_model(art, _target())
    assert d["inputs"] == [{"name": "input_ids", "shape": [None, None], "dtype": "int64"},
                           {"name": "attention_mask", "shape": [None, None], "dtype": "int64"}]
    assert d["outputs"][0]["shape"] == [None, 3] and d["runtime_version"]
    assert d["session"]["device"] == "CPU" and d["cold"]["import_ms"] > 0
    ov_art = Artifact("onnx", b.files["onnx"], "fp32", "student", "openvino")
    d = describe_model(ov_art, _target(), shapes={"input_ids": [2, 8], "attention_mask": [2, 8]})
    assert [i["shape"] for i in d["inputs"]] == [[2, 8], [2, 8]]


def test_describe_model_that_the_runtime_cannot_load_is_a_usage_error(tmp_path):
    from edgedistill.artifacts import Artifact
    from edgedistill.bench.harness import describe_model
    from edgedistill.errors import EXIT_USAGE, UsageError

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UsageError, match="onnxruntime could not load .*junk.onnx") as e:
        describe_model(Artifact("onnx", junk, "fp32", "student", "onnxruntime"), _target())
    assert e.value.exit_code == EXIT_USAGE


def test_bench_artifact_on_a_two_input_model_without_labels(built, tmp_path, monkeypatch):
    """The whole harness on the text model with no labels: every run measured, the caching check
    present, accuracy said not measured, the outputs file still written."""
    from edgedistill.artifacts import Artifact
    from edgedistill.bench import environment, harness

    monkeypatch.setattr(environment, "governor", lambda: None)
    b = built("text")
    art = Artifact("onnx", b.files["onnx"], "fp32", "student", "onnxruntime")
    r = harness.bench_artifact(art, _target(measure_cache=False), harness.EvalSet(b.npz), tmp_path / "work")
    assert r["status"] == "ok", r["status_detail"]
    assert len(r["warm"]["runs"]) == 2 and r["warm"]["summary"]["n"] >= 200
    assert len(r["integrity"]["caching_run_ratios"]) == 2 and r["integrity"]["caching_ratio"] > 0
    assert r["integrity"]["sampled_outputs"]["argmax_mismatches"] == 0
    assert r["accuracy"]["measured"] is False and "no labels" in r["accuracy"]["reason"]
    assert "top1" not in r["accuracy"] and "teacher_agreement" not in r["accuracy"]
    outputs = np.load(tmp_path / "work" / f"{art.name}.outputs.npy")
    assert np.abs(outputs - b.reference).max() < MAX_ABS


def test_bench_artifact_with_labels_and_no_teacher_measures_top1_only(built, tmp_path, monkeypatch):
    from edgedistill.artifacts import Artifact
    from edgedistill.bench import environment, harness

    monkeypatch.setattr(environment, "governor", lambda: None)
    b = built("mixed")
    labels = b.reference.argmax(1)
    labels[:3] = (labels[:3] + 1) % 3  # three of twelve wrong
    art = Artifact("onnx", b.files["onnx"], "fp32", "teacher", "onnxruntime")
    r = harness.bench_artifact(art, _target(cold_runs=1), harness.EvalSet(b.npz, labels), tmp_path / "work")
    assert r["accuracy"]["measured"] is True and r["accuracy"]["top1"] == pytest.approx(9 / 12)
    assert "teacher_agreement" not in r["accuracy"]


class _Recorder:
    """A stand-in session that records what every call was fed."""

    def __init__(self):
        self.calls = []

    def run(self, feeds):
        self.calls.append({k: v.copy() for k, v in feeds.items()})


def test_the_caching_check_repeats_sample_0_of_every_input():
    """RELIABILITY 19 for several inputs: the repeated call feeds sample 0 of EVERY input (a
    runtime caching on any input would answer it), the varied ones other samples of all inputs."""
    from edgedistill.probe import probe

    inputs = _text_inputs(6, seed=3)
    samples = probe._batches(inputs, 1)
    session = _Recorder()
    probe._same_input(session, samples, {"min_iterations": 20, "max_duration_s": 10})
    repeated = [c for i, c in enumerate(session.calls) if (i // probe.SAME_INPUT_BLOCK) % 2 == 0]
    varied = [c for i, c in enumerate(session.calls) if (i // probe.SAME_INPUT_BLOCK) % 2 == 1]
    assert len(repeated) >= 50 and varied
    for call in repeated:
        assert list(call) == ["input_ids", "attention_mask"]
        assert all(np.array_equal(call[n], inputs[n][:1]) for n in inputs)
    for call in varied:
        assert not np.array_equal(call["input_ids"], inputs["input_ids"][:1])
        assert {n: call[n].shape for n in call} == {n: (1, SEQ) for n in inputs}


def test_a_fixed_batch_on_any_input_refuses_another_batch_size():
    """A sweep point at batch 2 on a model whose SECOND input has a fixed batch of 1."""
    from types import SimpleNamespace

    from edgedistill.probe import probe

    session = SimpleNamespace(inputs=[{"name": "features", "shape": [None, 4], "dtype": "float32"},
                                      {"name": "ids", "shape": [1, 2], "dtype": "int64"}])
    probe._check_batch(session, 1)
    with pytest.raises(probe.UnsupportedBatch, match=r"fixed at 1 \(input 'ids'\); batch 2"):
        probe._check_batch(session, 2)


def test_shapes_that_do_not_fit_are_refused_on_runtimes_that_take_the_data_shape(built, tmp_path):
    """ONNX Runtime takes the shape from the data, so a --shape typo would pass unseen: refused."""
    b = built("text")
    out = tmp_path / "out.npy"
    r = _probe(_request("onnxruntime", b.files["onnx"], None, "describe", out, shapes={"input_idz": [1, SEQ]}))
    assert r.status == "error" and "'input_idz'" in r.detail and "input_ids" in r.detail
    r = _probe(_request("onnxruntime", b.files["onnx"], None, "describe", out, shapes={"input_ids": [1, 2, 3]}))
    assert r.status == "error" and "shape [1, 2, 3] does not fit the model's ['?', '?']" in r.detail
    ok = _probe(_request("onnxruntime", b.files["onnx"], b.npz, "outputs", out, shapes={"input_ids": [1, SEQ]}))
    assert ok.status == "ok", ok.detail
