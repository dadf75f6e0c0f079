"""OpenVINO backend: ONNX converted to OpenVINO IR (.xml + .bin) at fp32 or fp16 weights, or
quantized to INT8 by NNCF's post-training quantization. openvino and nncf are imported inside
functions only."""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.backends.base import Availability, installed, package_version
from edgedistill.backends.common import (
    calibration_feeds,
    check_request,
    feed_rows,
    first_line,
    prequantized,
    quiet_stdout,
    staged_output,
)
from edgedistill.errors import BackendUnavailableError, ExportError
from edgedistill.onnx_files import check_onnx_external_data, onnx_inputs

if TYPE_CHECKING:
    import numpy

    from edgedistill.compress.accuracy import AccuracyCheck

NAME = "openvino"
EXTRA = "openvino"
ACCEPTS = ("onnx",)
PRECISIONS = ("fp32", "fp16", "int8")
TAKES_PREQUANTIZED = True  # it reads a QDQ ONNX (QAT, compress/qat.py) as an int8 model


def availability() -> Availability:
    return installed("openvino")


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | dict[str, numpy.ndarray] | None,
           accuracy: AccuracyCheck | None = None) -> Artifact:
    """`accuracy` (int8 only): measure the default quantization on the validation split and,
    when it loses more than allowed, try the fallbacks (compress/ov_fallbacks.py)."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    onnx_model = check_onnx_external_data(source.path)
    # Checked before anything is converted or written: wrong calibration data leaves nothing.
    quantized = prequantized(NAME, source, precision)  # a QAT student's QDQ ONNX: no calibration
    feeds = calibration_feeds(calibration, onnx_inputs(onnx_model), NAME) if precision == "int8" and not quantized else None
    import openvino as ov

    out_path = Path(out_dir) / f"{source.role}-{precision}-{NAME}.xml"
    start = time.perf_counter()
    model = _convert(ov, Path(source.path))
    meta: dict[str, Any] = {"converter": "openvino.convert_model", "openvino": ov.__version__}
    if quantized:
        # QuantizeLinear/DequantizeLinear pairs become FakeQuantize nodes, which OpenVINO's CPU
        # plugin runs as int8: nothing is left for NNCF to do.
        meta.update(quantized)
    elif precision == "int8":
        if accuracy is None:
            model, model_type = _quantize(model, feeds)
        else:
            from edgedistill.compress import ov_fallbacks

            model, model_type, meta["quantization"] = ov_fallbacks.quantize(ov, model, feeds, accuracy)
        meta.update(quantizer="nncf.quantize", nncf=package_version("nncf"),
                    preset="performance (default: symmetric activations and weights)", model_type=model_type,
                    calibration_samples=len(next(iter(feeds.values()))))
        if accuracy is not None and meta["quantization"]["method"] == "accuracy_control":
            meta["quantizer"] = "nncf.quantize_with_accuracy_control"
    # fp16 keeps fp32 activations and computes as the device prefers; only the stored weights
    # are halved. int8 weights are int8 already, so nothing is left to compress.
    compress = precision == "fp16"
    with staged_output(out_path) as tmp_xml:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress)
    meta.update(compress_to_fp16=compress, source_path=str(source.path),
                export_s=round(time.perf_counter() - start, 3))
    return Artifact(kind="openvino_ir", path=out_path, precision=precision,  # type: ignore[arg-type]
                    role=source.role, backend=NAME, meta=meta)


def _convert(ov: Any, onnx_path: Path) -> Any:
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as e:  # OpConversionFailure, GeneralFailure, ...
        op = _unconverted_operators(str(e))
        detail = f"unsupported operator {op}" if op else first_line(str(e))
        raise ExportError(f"{NAME} convert_model failed for {onnx_path.name}: {detail}",
                          "try another backend for this model") from e


# OpenVINO's ONNX frontend ends its report with "-- No conversion rule found for operations:
# mylib.Weird, Foo" or "-- Conversion is failed for: Foo"; its first line names only C++ source.
_UNCONVERTED = re.compile(
    r"(?:No conversion rule found for operations?|Conversion is failed for):\s*(.+)"
)


def _unconverted_operators(text: str) -> str | None:
    m = _UNCONVERTED.search(text)
    return m.group(1).strip() if m else None


def require_nncf() -> None:
    if importlib.util.find_spec("nncf") is None:  # fp32/fp16 work without it
        raise BackendUnavailableError(f"{NAME} int8 export needs nncf, which is not installed",
                                      "pip install 'edgedistill[openvino]'")


def calibration_dataset(feeds: dict[str, numpy.ndarray]) -> Any:
    """One sample per item: the graph's batch axis may be static (1), and NNCF feeds items as is
    (a dict of every input, by name, for a model with several)."""
    import nncf

    count = len(next(iter(feeds.values())))
    items = [feed_rows(feeds, i, i + 1) for i in range(count)]
    return nncf.Dataset(items if len(feeds) > 1 else [next(iter(item.values())) for item in items])


def is_transformer(model: Any) -> bool:
    return any(op.get_type_name() == "Softmax" for op in model.get_ops())


def _quantize(model: Any, feeds: dict[str, numpy.ndarray], **options: Any) -> tuple[Any, str]:
    """The INT8 model and the NNCF model type it was quantized as ("transformer" or "default");
    `options`: more of nncf.quantize's (the fallbacks' advanced_parameters)."""
    require_nncf()
    import nncf

    count = len(next(iter(feeds.values())))
    dataset = calibration_dataset(feeds)
    try:
        with quiet_stdout():  # NNCF draws rich progress bars on stdout
            # Full bias correction: with NNCF's default fast one, an under-trained digits student
            # kept only 93 % top-1 agreement with its fp32 self on an AVX-512 VNNI CPU; the
            # full one kept 100 %, at a cost of seconds on small models.
            # A transformer (attention: Softmax in the graph) as NNCF's guide asks: model_type
            # TRANSFORMER keeps the ops that lose most in INT8 (LayerNorm, Softmax, ...) in float.
            transformer = is_transformer(model)
            quantized = nncf.quantize(model, dataset, subset_size=count, fast_bias_correction=False,
                                      **({"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}),
                                      **options)
            return quantized, "transformer" if transformer else "default"
    except Exception as e:
        raise ExportError(f"{NAME} int8 quantization (nncf.quantize) failed: "
                          f"{type(e).__name__}: {first_line(str(e))}") from e
