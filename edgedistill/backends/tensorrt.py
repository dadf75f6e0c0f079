"""TensorRT backend: an engine (.plan) built from ONNX on the GPU target itself.

Engines are native code tied to one GPU model and TensorRT version, so they are always built
where they run, never taken from a user. INT8 uses explicit quantization: the ONNX is first
quantized to symmetric QDQ by onnxruntime's quantizer on the CPU (the calibration data feeds it),
and TensorRT keeps those scales. This is TensorRT 10's recommended path; its implicit
calibrators (IInt8EntropyCalibrator2) are deprecated there and would need device buffers here.
tensorrt is imported inside functions only.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact, atomic_write_bytes
from edgedistill.backends.base import Availability, package_version
from edgedistill.backends.common import check_calibration, check_request
from edgedistill.errors import BackendUnavailableError, ExportError, UsageError
from edgedistill.onnx_files import (
    check_onnx_external_data,
    has_external_data,
    onnx_input,
)

if TYPE_CHECKING:
    import numpy

NAME = "tensorrt"
EXTRA = "tensorrt"
ACCEPTS = ("onnx",)
PRECISIONS = ("fp32", "fp16", "int8")
# The "qat" INT8 fallback (compress/qat_fallback.py) hands no prequantized ONNX here:
PREQUANTIZED_REASON = ("TensorRT takes QDQ with symmetric int8 activations (zero point 0); the QAT "
                       "student's (XNNPACK quantizer) are asymmetric")

WORKSPACE_BYTES = 1 << 30
MAX_BATCH = 64  # upper bound of the dynamic batch profile; accuracy runs use batches up to it
TIMING_CACHE = "tensorrt.timing.cache"  # shared by every engine built into the same folder
INSTALL_HINT = ("install TensorRT on the GPU target: pip install tensorrt from NVIDIA's index, "
                "or JetPack on Jetson")
_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def cuda_gpu_visible() -> bool:
    """A CUDA GPU this process may use, judged without importing any CUDA library."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):  # CUDA's "hide every GPU"
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    discrete = gpus.is_dir() and any(gpus.iterdir())
    jetson = Path("/etc/nv_tegra_release").exists()  # integrated GPU: no /proc/driver/nvidia
    return discrete or jetson


def availability() -> Availability:
    problems = []
    if importlib.util.find_spec("tensorrt") is None:
        problems.append(f"the tensorrt package is not installed ({INSTALL_HINT})")
    if not cuda_gpu_visible():
        problems.append("no CUDA GPU is visible")
    if problems:
        return Availability(False, reason="; ".join(problems))
    return Availability(True, next(filter(None, map(package_version, _DISTRIBUTIONS)), None))


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | None, accuracy: Any = None) -> Artifact:
    """`accuracy` is not used yet: a plan's INT8 drop is not measured in the export (no fallbacks)."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    model = check_onnx_external_data(source.path)
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError("tensorrt is not installed", INSTALL_HINT)
    input_name, shape = onnx_input(model)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    meta: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgedistill-trt-") as work:
        onnx_path = Path(source.path)
        if precision == "int8":
            from edgedistill.backends.onnxruntime import quantize_qdq

            samples = check_calibration(calibration, shape, input_name, NAME)
            onnx_path = Path(work) / "qdq.onnx"
            meta.update(quantize_qdq(Path(source.path), onnx_path, {input_name: samples},
                                     external=has_external_data(model), symmetric_activations=True))
        plan, build_meta = build_engine(onnx_path, input_name, shape, precision,
                                        timing_cache=out_dir / TIMING_CACHE)
    out_path = out_dir / f"{source.role}-{precision}-{NAME}.plan"
    atomic_write_bytes(out_path, plan)
    meta.update(build_meta, source_path=str(source.path),
                export_s=round(time.perf_counter() - start, 3))
    return Artifact(kind="tensorrt_plan", path=out_path, precision=precision,  # type: ignore[arg-type]
                    role=source.role, backend=NAME, meta=meta)


def build_engine(onnx_path: Path, input_name: str, shape: list[int | None], precision: str,
                 *, timing_cache: Path) -> tuple[bytes, dict[str, Any]]:
    """Parse ONNX into a TensorRT network and build a serialized engine for this GPU."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from a file, so external data resolves
        raise ExportError(f"{NAME} ONNX parser rejected {onnx_path.name}: {_parser_errors(parser)}",
                          "try another backend, or a newer TensorRT")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # the Q/DQ nodes carry the scales
    profile_shapes = _add_profile(builder, config, input_name, shape)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{NAME} could not build an engine for {onnx_path.name} at {precision} "
                          "(see TensorRT's log above)", "check the GPU supports this precision")
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan)), {
        "builder": "tensorrt.Builder.build_serialized_network",
        "tensorrt": trt.__version__,
        "workspace_bytes": WORKSPACE_BYTES,
        "flags": {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[precision],
        "profile": profile_shapes,
        "timing_cache": str(timing_cache),
    }


def _parser_errors(parser: Any) -> str:
    """Every parser error with the node and operator it is about."""
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()} ({err.node_name() or 'unnamed'}, operator {err.node_operator()})"
        errors.append(f"{where}: {err.desc()}" if err.node() >= 0 else err.desc())
    return "; ".join(errors) or "no details"


def _add_profile(builder: Any, config: Any, input_name: str,
                 shape: list[int | None]) -> dict[str, list[int]] | None:
    """An optimization profile spanning batch 1..MAX_BATCH when the batch axis is dynamic."""
    if all(d is not None for d in shape):
        return None
    if any(d is None for d in shape[1:]):
        raise UsageError(f"{NAME} needs static input dims except the batch axis; "
                         f"input {input_name!r} has shape {shape}")
    rest = [int(d) for d in shape[1:]]  # type: ignore[arg-type]
    shapes = {"min": [1, *rest], "opt": [1, *rest], "max": [MAX_BATCH, *rest]}
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    return shapes
