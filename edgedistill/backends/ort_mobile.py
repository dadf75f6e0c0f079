"""ONNX Runtime mobile format: the ONNX model converted to an .ort file by onnxruntime's own
converter (onnxruntime.tools.convert_onnx_models_to_ort), optimized for the device's platform.

fp32 converts the exported ONNX; int8 converts the onnxruntime backend's static QDQ model
(quantize_qdq, the same quantizer and settings). `--optimization_style Fixed` bakes the graph
optimizations into the file, so a session on the device skips the optimizer: that is the
smaller session creation a phone app gets. They are platform-specific (NCHWc layouts on amd64,
int8 QDQ fusions on arm), so one .ort is built per platform the run's targets need and each
target measures its own (Artifact.variant = the platform).

The converter also writes `<model>.required_operators.config`: the operators the model needs,
the input of ONNX Runtime's reduced ("minimal") build for the device. It is kept beside the
.ort and listed in meta; nothing else the converter writes is kept. The runtime is imported
inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.backends import onnxruntime as ort_backend
from edgedistill.backends.common import (
    calibration_feeds,
    check_request,
    first_line,
    operator_from_message,
    prequantized,
    quiet_stdout,
    staged_output,
)
from edgedistill.errors import ExportError, UsageError
from edgedistill.onnx_files import check_onnx_external_data, has_external_data, onnx_inputs

if TYPE_CHECKING:
    import numpy

    from edgedistill.compress.accuracy import AccuracyCheck

    from edgedistill.config import TargetConfig

NAME = "ort-mobile"
EXTRA = None  # it is onnxruntime, a core dependency
ACCEPTS = ("onnx",)
PRECISIONS = ("fp32", "int8")
TAKES_PREQUANTIZED = True  # a QDQ ONNX (QAT, compress/qat.py) is converted as is
PLATFORMS = ("arm", "amd64")  # the converter's --target_platform choices
OPTIMIZATION_STYLE = "Fixed"  # optimizations baked in; "Runtime" is for compiling EPs (NNAPI, Core ML)
CONVERTER = "onnxruntime.tools.convert_onnx_models_to_ort"
OPERATORS_SUFFIX = ".required_operators.config"

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm", "arm64": "arm"}


def availability():
    return ort_backend.availability()


def this_machine() -> str | None:
    """This machine's platform in the converter's words, None for one it has no word for."""
    return _MACHINES.get(platform.machine().lower())


def target_platform(target: TargetConfig) -> str:
    """The platform the target's .ort is built for: its profile's ort_target_platform, else this
    machine's for a local target and "arm" for a device (phones, Jetson, Raspberry Pi)."""
    if target.ort_target_platform is not None:
        return target.ort_target_platform
    if target.runner != "local":
        return "arm"
    here = this_machine()
    if here is None:
        raise UsageError(f"target {target.name!r}: cannot tell which .ort platform this machine is "
                         f"(machine {platform.machine()!r}); expected x86_64 or aarch64",
                         'set ort_target_platform = "arm" or "amd64" in the target profile')
    return here


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | dict[str, numpy.ndarray] | None,
           target_platform: str | None = None, accuracy: AccuracyCheck | None = None) -> Artifact:
    """`target_platform`: "arm" or "amd64"; None: this machine's. `accuracy` (int8): the QDQ
    model is chosen with the onnxruntime backend's fallbacks (compress/ort_fallbacks.py),
    measured on the QDQ .onnx with ONNX Runtime before it is converted."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    chosen = target_platform or this_machine()
    if chosen not in PLATFORMS:
        raise UsageError(f"{NAME}: target platform {chosen!r}: expected one of {', '.join(PLATFORMS)}",
                         'set ort_target_platform = "arm" or "amd64" in the target profile')
    model = check_onnx_external_data(source.path)
    out_path = Path(out_dir) / f"{source.role}-{precision}-{NAME}-{chosen}.ort"
    operators = out_path.with_name(out_path.stem + OPERATORS_SUFFIX)
    start = time.perf_counter()
    meta: dict[str, Any] = {}
    # Checked before anything is written: wrong calibration data leaves nothing in out_dir.
    quantized = prequantized(NAME, source, precision)  # a QAT student's QDQ ONNX: no calibration
    feeds = calibration_feeds(calibration, onnx_inputs(model), NAME) if precision == "int8" and not quantized else None
    with staged_output(out_path) as tmp_path, tempfile.TemporaryDirectory(
            prefix=".ort-mobile-", dir=out_path.parent) as work:
        onnx_path = Path(source.path)
        if quantized:
            meta.update(quantized)
        elif precision == "int8":
            onnx_path = Path(work) / f"{out_path.stem}.qdq.onnx"
            if accuracy is None:
                meta.update(ort_backend.quantize_qdq(Path(source.path), onnx_path, feeds,
                                                     external=has_external_data(model), symmetric_activations=False))
            else:
                from edgedistill.compress import ort_fallbacks

                meta.update(ort_fallbacks.quantize(Path(source.path), onnx_path, feeds, external=has_external_data(model),
                                                   accuracy=accuracy, backend=NAME))
        converted, config = _convert(onnx_path, Path(work) / "converted", chosen)
        os.replace(converted, tmp_path)
        # Beside the .ort in the staging folder: staged_output moves it in before the .ort.
        os.replace(config, tmp_path.with_name(operators.name))
    import onnxruntime

    meta.update(converter=CONVERTER, onnxruntime=onnxruntime.__version__,
                optimization_style=OPTIMIZATION_STYLE, target_platform=chosen,
                required_operators_config=str(operators), source_onnx=str(source.path),
                source_path=str(source.path), export_s=round(time.perf_counter() - start, 3))
    return Artifact(kind="ort", path=out_path, precision=precision, role=source.role,  # type: ignore[arg-type]
                    backend=NAME, meta=meta, variant=chosen)


def _convert(onnx_path: Path, out_dir: Path, target: str) -> tuple[Path, Path]:
    """Run onnxruntime's converter on one model into `out_dir`: (the .ort, its operators config).
    Its prints, its logging and ONNX Runtime's own warnings are kept from the terminal; a failure
    is one ExportError naming the converter (and the operator where its message names one)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_converter() as captured:
            convert_onnx_models_to_ort(onnx_path, output_dir=out_dir,
                                       optimization_styles=[OptimizationStyle[OPTIMIZATION_STYLE]],
                                       target_platform=target)
    except Exception as e:  # the converter raises whatever InferenceSession raises
        op = operator_from_message(f"{e}\n{captured.getvalue()}")
        raise ExportError(f"{NAME} conversion to .ort ({CONVERTER}, target_platform {target}) failed"
                          f"{f' at operator {op}' if op else ''}: {type(e).__name__}: {first_line(str(e))}",
                          "try the onnxruntime backend (the .onnx) for this model") from e
    ort_file = out_dir / f"{onnx_path.stem}.ort"
    config = out_dir / f"{onnx_path.stem}{OPERATORS_SUFFIX}"
    if not ort_file.is_file() or not config.is_file():
        found = sorted(p.name for p in out_dir.iterdir())
        raise ExportError(f"{NAME}: {CONVERTER} wrote {found}, expected {ort_file.name} and {config.name}",
                          "the converter's output names may have changed with this onnxruntime version")
    return ort_file, config


@contextlib.contextmanager
def _quiet_converter() -> Iterator[Any]:
    """The converter prints progress, logs an INFO line per config and ONNX Runtime warns (to the
    C++ log) that an amd64 model holds hardware-specific optimizations: which is the point."""
    import onnxruntime

    logger = logging.getLogger("ort_format_model.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    onnxruntime.set_default_logger_severity(3)  # errors only
    try:
        with quiet_stdout() as captured:
            yield captured
    finally:
        onnxruntime.set_default_logger_severity(2)  # onnxruntime's default (warnings)
        logger.setLevel(level)
