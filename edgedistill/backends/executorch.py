"""ExecuTorch backend: a torch.export program lowered to XNNPACK and written as a .pte, at fp32,
fp16 (the model in float16, XNNPACK's fp16 operators; float32 in and out) or INT8 (PT2E
quantization with ExecuTorch's XNNPACK quantizer). torch and executorch are imported
inside functions only.

The program is re-exported with a static batch of 1: ExecuTorch plans memory ahead of time and
its Python runtime refuses to resize a static input, so the .pte runs one sample per call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact, atomic_write_bytes
from edgedistill.backends.base import Availability, installed, package_version
from edgedistill.backends.common import (
    calibration_feeds,
    check_request,
    first_line,
    operator_from_message,
    quiet_native_stderr,
    prequantized,
    quiet_stdout,
)
from edgedistill.errors import ExportError
from edgedistill.exporters import inputs_meta, static_example

if TYPE_CHECKING:
    import numpy
    import torch

    from edgedistill.compress.accuracy import AccuracyCheck

NAME = "executorch"
EXTRA = "executorch"
ACCEPTS = ("exported_program",)
PRECISIONS = ("fp32", "fp16", "int8")
DELEGATE = "XnnpackBackend"
TAKES_PREQUANTIZED = True  # a converted PT2E program (QAT, compress/qat.py) is lowered as is


def availability() -> Availability:
    return installed("executorch")


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | dict[str, numpy.ndarray] | None,
           accuracy: AccuracyCheck | None = None) -> Artifact:
    """`calibration`: one array, or one per input in the program's input order (the model's
    forward order: a program keeps positions, not the data's names). `accuracy` (int8): the
    quantized program's drop on the validation split is measured and recorded (no fallbacks)."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    import torch

    start = time.perf_counter()
    program = torch.export.load(str(source.path))
    example = static_example(program, NAME)
    names = [f"input_{i}" for i in range(len(example))]  # a .pte keeps positions, not names
    meta: dict[str, Any] = {"input_shape": list(example[0].shape),
                            "input_dtype": str(example[0].dtype).removeprefix("torch."),
                            "inputs": inputs_meta(names, example, [list(t.shape) for t in example]),
                            "delegate": DELEGATE, "executorch": package_version("executorch")}
    module = program.module()
    if quantized := prequantized(NAME, source, precision):
        # Its quantize/dequantize nodes are what XNNPACK's partitioner fuses into int8 kernels:
        # quantizing it again would only add a second, calibrated, rounding.
        meta.update(quantized)
    elif precision == "int8":
        if isinstance(calibration, dict):  # by position: the names are the data's, not the program's
            calibration = dict(zip(names, calibration.values()))
        feeds = calibration_feeds(calibration, {n: [None, *t.shape[1:]] for n, t in zip(names, example)}, NAME)
        module, quant_meta = _quantize(module, example, list(feeds.values()))
        meta.update(quant_meta)
    elif precision == "fp16":
        module = _in_half(module)
        meta.update(fp16="weights and compute in float16 (XNNPACK's fp16 operators); inputs and "
                         "outputs float32, cast inside the program")
    buffer, delegation = _lower(module, example)
    out_path = Path(out_dir) / f"{source.role}-{precision}-{NAME}.pte"
    if accuracy is not None and precision == "int8":
        meta["quantization"] = _measured(buffer, out_path.name, accuracy)
    atomic_write_bytes(out_path, buffer)
    meta.update(delegation, source_path=str(source.path),
                export_s=round(time.perf_counter() - start, 3))
    return Artifact(kind="pte", path=out_path, precision=precision,  # type: ignore[arg-type]
                    role=source.role, backend=NAME, meta=meta)


def _quantize(module: torch.nn.Module, example: tuple[torch.Tensor, ...],
              samples: list[numpy.ndarray]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """PT2E static quantization with the XNNPACK quantizer (int8 symmetric, per-channel
    weights), calibrated one sample at a time, the batch the program is exported with."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    try:
        with quiet_stdout():
            graph = torch.export.export(module, example).module()
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for i in range(len(samples[0])):
                    prepared(*(torch.from_numpy(s[i : i + 1]) for s in samples))
            converted = convert_pt2e(prepared)
    except Exception as e:
        raise _failure("int8 quantization (PT2E, XNNPACKQuantizer)", e) from e
    return converted, {
        "quantizer": "XNNPACKQuantizer (torchao pt2e prepare/convert)",
        "quantization_config": "get_symmetric_quantization_config(is_per_channel=True)",
        "calibration_samples": len(samples[0]),
        "torchao": package_version("torchao"),
    }


def _half_module():
    import torch

    class Half(torch.nn.Module):
        """The model in float16 between a cast of its float inputs and one of its output back to
        float32: XNNPACK takes the float16 graph; callers keep feeding and reading float32."""

        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.inner = module.half()

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            cast = [x.half() if x.is_floating_point() else x for x in inputs]
            return self.inner(*cast).float()

    return Half


def _in_half(module: torch.nn.Module) -> torch.nn.Module:
    return _half_module()(module)


def _measured(buffer: bytes, name: str, accuracy: AccuracyCheck) -> dict[str, Any]:
    """The program's drop on the validation split, run here before it is written in place."""
    import tempfile

    from edgedistill.compress.trials import default_only

    with tempfile.TemporaryDirectory(prefix="edgedistill-et-") as work, quiet_native_stderr():
        path = Path(work) / name  # its runtime logs CPU and thread-pool lines straight to fd 2
        path.write_bytes(buffer)
        return default_only(NAME, path, accuracy)


def _lower(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[bytes, dict[str, Any]]:
    """Export with a static batch, lower what XNNPACK supports to it, serialize the program."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    try:
        with quiet_stdout():
            program = torch.export.export(module, example)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            info = get_delegation_info(edge.exported_program().graph_module)
            buffer = edge.to_executorch().buffer
    except Exception as e:
        raise _failure("lowering to XNNPACK", e) from e
    # Nodes left outside the delegate run on ExecuTorch's portable kernels, often much slower.
    return buffer, {"delegated_subgraphs": info.num_delegated_subgraphs,
                    "delegated_nodes": info.num_delegated_nodes,
                    "non_delegated_nodes": info.num_non_delegated_nodes}


def _failure(stage: str, exc: BaseException) -> ExportError:
    op = operator_from_message(f"{exc}\n{exc.__cause__ or ''}")
    return ExportError(
        f"{NAME} {stage} failed{f', operator {op}' if op else ''}: "
        f"{type(exc).__name__}: {first_line(str(exc))}",
        "try the onnxruntime or openvino backend for this model",
    )
