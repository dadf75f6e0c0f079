"""ONNX Runtime backend: the ONNX file as is (fp32), or statically quantized QDQ (int8) with
onnxruntime's own quantizer. The runtime is imported inside functions only."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.backends.base import Availability, package_version
from edgedistill.backends.common import (
    calibration_feeds,
    check_request,
    feed_rows,
    first_line,
    operator_from_message,
    prequantized,
    quiet_stdout,
    staged_output,
)
from edgedistill.errors import ExportError
from edgedistill.onnx_files import (
    check_onnx_external_data,
    has_external_data,
    onnx_inputs,
)

if TYPE_CHECKING:
    import numpy

    from edgedistill.compress.accuracy import AccuracyCheck

NAME = "onnxruntime"
EXTRA = None
ACCEPTS = ("onnx",)
PRECISIONS = ("fp32", "int8")
TAKES_PREQUANTIZED = True  # a QDQ ONNX (QAT, compress/qat.py) is its int8 model as is

# The same runtime ships under several distribution names (GPU, OpenVINO EP, DirectML builds).
_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")


def availability() -> Availability:
    if importlib.util.find_spec("onnxruntime") is None:
        return Availability(False, reason="the onnxruntime package is not installed")
    version = next(filter(None, map(package_version, _DISTRIBUTIONS)), None)
    return Availability(True, version)


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | dict[str, numpy.ndarray] | None,
           accuracy: AccuracyCheck | None = None) -> Artifact:
    """`accuracy` (int8 only): measure the default quantization on the validation split and,
    when it loses more than allowed, try the fallbacks (compress/ort_fallbacks.py)."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    model = check_onnx_external_data(source.path)
    out_path = Path(out_dir) / f"{source.role}-{precision}-{NAME}.onnx"
    start = time.perf_counter()
    quantized = prequantized(NAME, source, precision)
    # Checked before anything is written: wrong calibration data leaves nothing in out_dir.
    feeds = calibration_feeds(calibration, onnx_inputs(model), NAME) if precision == "int8" and not quantized else None
    with staged_output(out_path) as tmp_path:
        if precision == "fp32" or quantized:
            copy_onnx(Path(source.path), tmp_path, external=has_external_data(model))
            meta: dict[str, Any] = {"conversion": "copy", **(quantized or {})}
        elif accuracy is None:
            meta = quantize_qdq(Path(source.path), tmp_path, feeds,
                                external=has_external_data(model), symmetric_activations=False)
        else:
            from edgedistill.compress import ort_fallbacks

            meta = ort_fallbacks.quantize(Path(source.path), tmp_path, feeds, external=has_external_data(model),
                                          accuracy=accuracy, backend=NAME)
    meta.update(source_path=str(source.path), export_s=round(time.perf_counter() - start, 3))
    return Artifact(kind="onnx", path=out_path, precision=precision, role=source.role,  # type: ignore[arg-type]
                    backend=NAME, meta=meta)


def copy_onnx(src: Path, dst: Path, *, external: bool) -> None:
    """Copy an ONNX model; external data is rewritten to `<dst name>.data` so it keeps pairing
    with the model under its new name (a plain copy would still point at the old name)."""
    if not external:
        shutil.copyfile(src, dst)
        return
    import onnx

    model = onnx.load(str(src))  # only after check_onnx_external_data approved its locations
    onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
              location=dst.name + ".data")


class _Samples:
    """onnxruntime CalibrationDataReader over N samples of every input, one sample per call: a
    batch of one fits every model, dynamic batch axis or not, and min/max calibration is the same."""

    def __init__(self, feeds: dict[str, numpy.ndarray]):
        self._feeds = feeds
        self._count = len(next(iter(feeds.values())))
        self._next = 0

    def get_next(self) -> dict[str, numpy.ndarray] | None:
        if self._next >= self._count:
            return None
        self._next += 1
        return feed_rows(self._feeds, self._next - 1, self._next)

    def rewind(self) -> None:
        self._next = 0

    def __iter__(self) -> Iterator[dict[str, numpy.ndarray]]:  # as CalibrationDataReader's (qdq_loss_debug)
        self.rewind()
        return iter(self.get_next, None)


def quantize_qdq(src: Path, dst: Path, feeds: dict[str, numpy.ndarray], *,
                 external: bool, symmetric_activations: bool) -> dict[str, Any]:
    """Static post-training INT8 quantization into QDQ format; returns what was done.

    For onnxruntime (symmetric_activations=False): QUInt8 activations x QInt8 per-channel
    weights, its fastest CPU kernels, with weights reduced to 7 bits. Without reduce_range, x86
    CPUs without VNNI (AVX2 only) saturate 16-bit intermediate sums in these kernels: measured
    here, a digits convnet fell to 58% top-1 agreement with fp32, against 96% with reduce_range
    and no speed lost (U8U8 was as accurate but 35% slower).
    For TensorRT (symmetric_activations=True): QInt8 activations with zero point 0 at the full
    8 bits, which is what TensorRT's explicit quantization takes. onnxruntime's fused CPU kernels
    saturate on such a model on AVX2, so it is not meant for onnxruntime.
    """
    with tempfile.TemporaryDirectory(prefix="edgedistill-ort-") as work:
        pre = pre_process(src, Path(work), external=external)
        return quantize_prepared(pre, dst, feeds, external=external, symmetric_activations=symmetric_activations)


def pre_process(src: Path, work: Path, *, external: bool) -> Path:
    """The model after onnxruntime's quantization pre-processing, as `work`/pre.onnx.

    Shape inference and graph fusions first, as onnxruntime's quantization guide asks: unfused
    Conv+BatchNorm or unknown shapes leave tensors unquantized. Done once per export: every
    fallback quantizes (and ranks the nodes of) this same graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(work) / "pre.onnx"
    dumps_before = _dumps()
    try:
        with quiet_stdout():
            pre_process = functools.partial(quant_pre_process, str(src), str(pre), save_as_external_data=external,
                                            all_tensors_to_one_file=True, external_data_location=pre.name + ".data")
            try:
                pre_process()
            except Exception as e:  # noqa: BLE001 -- retried below, or re-raised
                if "symbolic shape inference" not in str(e):
                    raise
                # A text model with a dynamic sequence axis (BERT's masks, Dim.AUTO) defeats
                # onnxruntime's symbolic shape inference; ONNX's own shape inference still runs.
                pre_process(skip_symbolic_shape=True)
    except Exception as e:
        raise _quantization_failed(e) from e
    finally:  # a failed symbolic shape inference dumps its model here, retried or not
        _remove_shape_inference_dump(dumps_before)
    return pre


# What the fallbacks may ask of quantize_prepared, by onnxruntime's CalibrationMethod names.
CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile")


def quantize_prepared(pre: Path, dst: Path, feeds: dict[str, numpy.ndarray], *, external: bool,
                      symmetric_activations: bool, calibrate_method: str = "MinMax",
                      nodes_to_exclude: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """quantize_static on a pre-processed model (see quantize_qdq for the types chosen), by
    `calibrate_method`, with `nodes_to_exclude` left in float; returns what was done."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    try:
        with quiet_stdout():
            quantize_static(
                str(pre), str(dst), _Samples(feeds),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=activation, weight_type=QuantType.QInt8,
                reduce_range=not symmetric_activations,
                calibrate_method=CalibrationMethod[calibrate_method], use_external_data_format=external,
                nodes_to_exclude=list(nodes_to_exclude),
                extra_options={"ActivationSymmetric": symmetric_activations,
                               "WeightSymmetric": True,
                               # Percentile's ranges are symmetric unless told (onnxruntime's
                               # default): half the 8 bits wasted on a ReLU's unsigned output.
                               **({"CalibTensorRangeSymmetric": symmetric_activations}
                                  if calibrate_method != "MinMax" else {})},
            )
    except Exception as e:
        raise _quantization_failed(e) from e
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "pre_process": "quant_pre_process",
        "format": "QDQ",
        "per_channel": True,
        "weight_type": "QInt8",
        "activation_type": "QInt8" if symmetric_activations else "QUInt8",
        "activation_symmetric": symmetric_activations,
        "reduce_range": not symmetric_activations,
        "calibrate_method": calibrate_method,
        "calibration_samples": len(next(iter(feeds.values()))),
        **({"nodes_to_exclude": list(nodes_to_exclude)} if nodes_to_exclude else {}),
    }


def _quantization_failed(e: Exception) -> ExportError:
    """The quantizer raises anything from KeyError to ORT's Fail: one ExportError naming it."""
    op = operator_from_message(str(e))
    return ExportError(
        f"{NAME} int8 quantization failed{f' at operator {op}' if op else ''}: "
        f"{type(e).__name__}: {first_line(str(e))}",
        "try fp32 for this backend, or another backend's int8",
    )


# When its symbolic shape inference fails, onnxruntime saves the half-inferred model to the
# current folder under a fixed name (its weights in a <uuid>.data file beside it) before
# raising: a quantization must not leave them there.
_SHAPE_INFERENCE_DUMPS = (Path("sym_shape_infer_temp.onnx"), Path("sym_shape_infer_temp.onnx.data"))


def _dumps() -> set[Path]:
    """The dump files and external-data files in the current folder."""
    return {p for p in (*_SHAPE_INFERENCE_DUMPS, *Path().glob("*.data")) if p.exists()}


def _remove_shape_inference_dump(existing_before: set[Path]) -> None:
    if not _SHAPE_INFERENCE_DUMPS[0].exists():
        return  # no dump: any new .data file here is not the quantizer's
    for path in _dumps() - existing_before:
        path.unlink(missing_ok=True)
