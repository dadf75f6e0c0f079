"""OpenVINO's INT8 with fallbacks: NNCF's default post-training quantization, measured on the
validation split; when it loses more than allowed, in [compress] int8_fallbacks order:

- percentile: nncf.quantize with activation ranges from RangeEstimatorParametersSet.MEAN_QUANTILE
  (each sample's 0.01 % / 99.99 % quantiles, averaged over the samples) instead of min/max:
  NNCF's own outlier-clipping range, the nearest it has to a percentile calibration;
- accuracy_control: nncf.quantize_with_accuracy_control with max_drop = int8_max_drop_pt / 100
  (absolute), validated on the validation split by the same top-1 as the check: NNCF ranks the
  quantized layers by their effect on that metric and reverts them to float until the drop is
  met (or it gives up, keeping what it had).

entropy (KL-divergence calibration) has no NNCF equivalent, and float_nodes is what
accuracy_control does for OpenVINO: both are recorded as not available. qat is api.export's.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.backends import openvino as ov_backend
from edgedistill.backends.common import first_line, quiet_stdout
from edgedistill.compress.trials import Trials
from edgedistill.errors import ExportError

if TYPE_CHECKING:
    import numpy

    from edgedistill.compress.accuracy import AccuracyCheck

NOT_AVAILABLE = {
    "entropy": "not available for openvino: NNCF has no entropy (KL) calibration",
    "float_nodes": "not available for openvino: accuracy_control is NNCF's measured way to keep layers in float",
}


def fake_quantize_count(model: Any) -> int:
    """FakeQuantize operations left in the model: fewer means more of it runs in float."""
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def quantize(ov: Any, model: Any, feeds: dict[str, numpy.ndarray],
             accuracy: AccuracyCheck) -> tuple[Any, str, dict[str, Any]]:
    """(the chosen INT8 model, the NNCF model type, meta["quantization"])."""
    import nncf

    ov_backend.require_nncf()
    with tempfile.TemporaryDirectory(prefix="edgedistill-ov-fallbacks-") as work_dir:
        trials = Trials(accuracy, "openvino")
        model_type = "default"

        def measure(method: str, candidate: Any) -> bool:
            path = Path(work_dir) / f"{len(trials.tried)}.xml"
            ov.save_model(candidate, str(path), compress_to_fp16=False)
            left = fake_quantize_count(candidate)
            if trials.tried and left * 2 < default_fq:
                # NNCF reverted more than half of the quantized operations (all of them, when it
                # cannot reach the drop): measured, but not an INT8 model, so never chosen.
                trials.measure(method, path, value=candidate, fake_quantize=left)
                trials.disqualify(f"{left} of the default's {default_fq} FakeQuantize operations left: "
                                  "more than half reverted to float, not an INT8 model")
                return False
            return trials.measure(method, path, value=candidate, fake_quantize=left)

        quantized, model_type = ov_backend._quantize(model.clone(), feeds)
        default_fq = fake_quantize_count(quantized)
        met = measure("default", quantized)
        for method in accuracy.fallbacks:
            if met:
                break
            if method in NOT_AVAILABLE:
                trials.skip(method, NOT_AVAILABLE[method])
            elif method == "percentile":
                from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
                from nncf.quantization.range_estimator import RangeEstimatorParametersSet

                params = AdvancedQuantizationParameters(
                    activations_range_estimator_params=RangeEstimatorParametersSet.MEAN_QUANTILE)
                met = measure(method, ov_backend._quantize(model.clone(), feeds, advanced_parameters=params)[0])
            elif method == "accuracy_control":
                met = measure(method, _accuracy_control(nncf, model.clone(), feeds, accuracy))
        return trials.best.value, model_type, trials.summary()


def _accuracy_control(nncf: Any, model: Any, feeds: dict[str, numpy.ndarray], accuracy: AccuracyCheck) -> Any:
    import numpy as np

    from edgedistill.compress.accuracy import as_feeds

    names = [p.get_any_name() for p in model.inputs]
    inputs = as_feeds(accuracy.inputs, names)
    inputs = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    # Labelled rows with their labels; without labels, every row with the FP32 student's class.
    if accuracy.labels is not None:
        rows = np.flatnonzero(accuracy.labels >= 0)
        targets = accuracy.labels[rows]
    else:
        rows = np.arange(len(accuracy.reference))
        targets = accuracy.reference.reshape(len(rows), -1).argmax(-1)
    items = [({k: v[i : i + 1] for k, v in inputs.items()}, int(t)) for i, t in zip(rows, targets)]
    validation = nncf.Dataset(items, lambda item: item[0] if len(names) > 1 else next(iter(item[0].values())))

    def top1(compiled: Any, data: Any) -> float:
        output = compiled.outputs[0]
        hits = [int(np.asarray(compiled(x)[output]).reshape(-1).argmax() == t) for x, t in data]
        return float(np.mean(hits))

    count = len(next(iter(feeds.values())))
    logger = logging.getLogger("nncf")  # it logs every ranking step at INFO
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with quiet_stdout():
            return nncf.quantize_with_accuracy_control(
                model, ov_backend.calibration_dataset(feeds), validation, top1,
                max_drop=accuracy.max_drop_pt / 100, drop_type=nncf.DropType.ABSOLUTE,
                subset_size=count, fast_bias_correction=False,
                **({"model_type": nncf.ModelType.TRANSFORMER} if ov_backend.is_transformer(model) else {}))
    except Exception as e:
        raise ExportError(f"openvino int8 quantization (nncf.quantize_with_accuracy_control) failed: "
                          f"{type(e).__name__}: {first_line(str(e))}") from e
    finally:
        logger.setLevel(level)
