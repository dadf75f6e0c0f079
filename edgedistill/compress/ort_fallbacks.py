"""ONNX Runtime's INT8 with fallbacks (the onnxruntime and ort-mobile backends): the default
MinMax QDQ quantization, measured on the validation split; when it loses more than allowed,
in [compress] int8_fallbacks order:

- entropy / percentile: quantize_static with CalibrationMethod.Entropy / Percentile (onnxruntime's
  defaults: 128 histogram bins for entropy, the 99.999th percentile), ranges that clip outliers
  instead of spending the 8 bits on them;
- float_nodes: the most sensitive nodes kept in float, found by measurement: for each quantized
  activation, the nodes around it (its producer and consumers: all must be float for it to stay
  float) are left in float alone (nodes_to_exclude) and the model run on the validation inputs;
  activations are ranked by how much that recovers, and the nodes of the top 1, 2, 4, ... are
  kept in float until the drop is met, at most half of the quantized nodes (rounded up; beyond
  that it is not an INT8 model).
  (onnxruntime's qdq_loss_debug SQNR per tensor was tried first: a tensor with one huge channel
  has a high SQNR while its small channels are quantized to zero, so it ranked the wrong node.)

accuracy_control is OpenVINO's; qat is run by api.export after the backend (not here).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.backends import onnxruntime as ort_backend
from edgedistill.compress.trials import Trials

if TYPE_CHECKING:
    import numpy

    from edgedistill.compress.accuracy import AccuracyCheck

CALIBRATION = {"entropy": "Entropy", "percentile": "Percentile"}


def quantize(src: Path, dst: Path, feeds: dict[str, numpy.ndarray], *, external: bool,
             accuracy: AccuracyCheck, backend: str = "onnxruntime") -> dict[str, Any]:
    """Write the chosen QDQ model to `dst` (its external data beside it, named for it); returns
    the quantizer's meta of the chosen one with "quantization" = Trials.summary()."""
    with tempfile.TemporaryDirectory(prefix="edgedistill-ort-fallbacks-") as work_dir:
        work = Path(work_dir)
        pre = ort_backend.pre_process(src, work, external=external)
        trials = Trials(accuracy, "onnxruntime")
        metas: dict[str, dict[str, Any]] = {}

        float_ranking: list[dict[str, Any]] = []

        def attempt_file(index: int, **options: Any) -> Path:
            path = work / str(index) / dst.name  # each in its own folder, under the final name
            path.parent.mkdir()
            metas[str(path)] = ort_backend.quantize_prepared(pre, path, feeds, external=external,
                                                             symmetric_activations=False, **options)
            return path

        def attempt(method: str, index: int, **options: Any) -> bool:
            path = attempt_file(index, **options)
            extra = {"float_nodes": list(options["nodes_to_exclude"])} if options.get("nodes_to_exclude") else {}
            return trials.measure(method, path, **extra)

        default = work / "0" / dst.name
        met = attempt("default", 0)
        for method in accuracy.fallbacks:
            if met:
                break
            if method in CALIBRATION:
                met = attempt(method, len(metas), calibrate_method=CALIBRATION[method])
            elif method == "float_nodes":
                float_ranking = rank_nodes(default, accuracy, lambda i, nodes: attempt_file(i, nodes_to_exclude=nodes),
                                           start=len(metas))
                total = len({n for _, nodes in tensor_groups(default) for n in nodes})
                steps = _schedule(float_ranking, total)
                for kept in steps:
                    if (met := attempt(method, len(metas), nodes_to_exclude=kept)):
                        break
                if not steps:
                    trials.skip(method, "no quantized activation whose nodes fit in half of the model"
                                if float_ranking else "no quantized activation to keep in float")
            elif method == "accuracy_control":
                trials.skip(method, f"not available for {backend} (it is OpenVINO's NNCF)")
            # "qat" trains the student again: api.export runs it after the backend, not here.
        chosen = Path(trials.best.value)
        for f in chosen.parent.iterdir():  # the model and its external data, into dst's folder
            os.replace(f, dst.parent / f.name)
        meta = metas[str(chosen)]
        meta["quantization"] = trials.summary(**({"float_nodes_ranking": float_ranking} if float_ranking else {}))
        return meta


def _schedule(ranking: list[dict[str, Any]], total: int) -> list[list[str]]:
    """The nodes of the top 1, 2, 4, ... tensors, while at most half of the `total` quantized
    nodes (rounded up) stay in float: beyond that it is not an INT8 model."""
    steps, k = [], 1
    while k <= len(ranking):
        nodes = list(dict.fromkeys(n for r in ranking[:k] for n in r["nodes"]))
        if len(nodes) > math.ceil(total / 2):
            break
        if not steps or nodes != steps[-1]:
            steps.append(nodes)
        k = k * 2 if k * 2 <= len(ranking) or k == len(ranking) else len(ranking)
    return steps


def tensor_groups(qdq: Path) -> list[tuple[str, list[str]]]:
    """Each activation the QDQ model quantizes, with the quantized nodes next to it: its
    producer and every consumer of its dequantized copy. Keeping a tensor in float needs all of
    them in float: any one left quantized keeps the Q/DQ pair on it."""
    import onnx

    graph = onnx.load(str(qdq), load_external_data=False).graph
    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = [n for n in graph.node if n.op_type not in qdq_ops and dequantized.intersection(n.input)]
    initializers = {i.name for i in graph.initializer}
    groups = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in initializers:
            continue  # a weight's Q (rare in QDQ: weights are stored quantized) is not an activation
        dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]
                      for o in n.output}
        names = [n.name for n in quantized if q.input[0] in n.output or dq_outputs.intersection(n.input)]
        if names:
            groups.append((q.input[0], names))
    return groups


def output_error(accuracy: AccuracyCheck, outputs: numpy.ndarray) -> float:
    """Mean squared difference from the FP32 student's outputs: what ranks nodes whose top-1
    drops tie (top-1 moves in steps of one sample)."""
    import numpy as np

    return float(np.mean((outputs.reshape(accuracy.reference.shape) - accuracy.reference) ** 2))


def rank_nodes(default_qdq: Path, accuracy: AccuracyCheck, quantize_without, *, start: int) -> list[dict[str, Any]]:
    """The quantized activations, most sensitive first, by measurement: the model quantized
    again with that tensor's nodes (tensor_groups) alone left in float (`quantize_without(index,
    nodes)` -> its path) and run on the validation inputs; the tensor whose float form recovers
    most (smallest drop, then smallest output error) is the one quantization hurts most. One
    quantization per quantized activation."""
    from edgedistill.compress.accuracy import artifact_outputs

    ranking = []
    for i, (tensor, nodes) in enumerate(tensor_groups(default_qdq)):
        outputs = artifact_outputs("onnxruntime", quantize_without(start + i, nodes), "int8", accuracy.inputs)
        ranking.append({"tensor": tensor, "nodes": nodes, "drop_pt": round(accuracy.drop_pt(outputs), 4),
                        "output_mse": round(output_error(accuracy, outputs), 6)})
    return sorted(ranking, key=lambda r: (r["drop_pt"], r["output_mse"]))
