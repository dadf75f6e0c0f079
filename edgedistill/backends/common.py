"""What every backend's export shares: atomic staging of output files, a quiet stdout for
chatty converters, the operator named in a converter's error, and checks of the request and
the calibration data.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edgedistill.artifacts import Artifact
from edgedistill.errors import UsageError

if TYPE_CHECKING:
    import numpy


_OPERATOR_PATTERNS = (
    # torch.onnx DispatchError: "No ONNX function found for <OpOverload(op='mylib.weird', overload='default')>"
    re.compile(r"OpOverload\(op='(?P<op>[\w.:]+)', overload='(?P<overload>\w+)'\)"),
    # torch.onnx ConversionError: "... call_function[target=torch.ops.aten.foo.default]"
    re.compile(r"target=torch\.ops\.(?P<op>[\w.]+)"),
    # torch.export / dynamo: "aten::foo", "torch.ops.aten.foo.default"
    re.compile(r"torch\.ops\.(?P<op>\w+\.\w+(?:\.\w+)?)"),
    re.compile(r"\b(?P<op>(?:aten|prim|prims|quantized)::\w+)"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def operator_from_message(text: str) -> str | None:
    """The operator an exporter or runtime error names, or None when it names none."""
    text = _ANSI.sub("", text)
    for pattern in _OPERATOR_PATTERNS:
        if m := pattern.search(text):
            groups = m.groupdict()
            return f"{groups['op']}.{groups['overload']}" if groups.get("overload") else groups["op"]
    return None


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of an exception text, ANSI colours removed, for one-line errors."""
    line = next((ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------- staging and quiet


@contextlib.contextmanager
def staged_output(final_path: Path) -> Iterator[Path]:
    """Yield where to write `final_path` inside a fresh temporary folder beside it.

    On success every file written there is moved into place, companions (.data, .bin) first and
    the main file last, so the main file's presence means its companions are complete; stale
    companions of an earlier export under the same name are removed. On failure the temporary
    folder goes, and nothing is left behind.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.", dir=final_path.parent))
    try:
        yield tmp_dir / final_path.name
        if not (tmp_dir / final_path.name).is_file():
            raise FileNotFoundError(f"the export wrote no {final_path.name}")
        produced = [p for p in tmp_dir.iterdir() if p.name != final_path.name]
        for companion in produced:
            os.replace(companion, final_path.parent / companion.name)
        os.replace(tmp_dir / final_path.name, final_path)
        produced_names = {p.name for p in produced}
        for stale in (Path(str(final_path) + ".data"), final_path.with_suffix(".bin")):
            if stale != final_path and stale.name not in produced_names:
                stale.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[io.StringIO]:
    """Capture what exporters and quantizers print (progress bars, banners) instead of showing it;
    the captured text is available to attach to an error."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Keep from the terminal what C++ libraries log straight to file descriptor 2 (absl's and
    TFLite's INFO lines from litert-torch's converter), which Python's redirection cannot catch.
    Python's own errors are raised, not printed, so they still reach the user."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def check_calibration(calibration: numpy.ndarray | None, expected: list[int | None],
                      input_name: str, backend: str) -> numpy.ndarray:
    """The calibration array as float32, or UsageError naming expected and actual shapes."""
    import numpy as np

    if calibration is None or len(calibration) == 0:
        raise UsageError(f"{backend} int8 export needs calibration data; none was given",
                         "pass calibration samples (N x C x H x W float32)")
    calibration = np.asarray(calibration)
    _check_shape(calibration, expected, input_name, backend)
    if not np.issubdtype(calibration.dtype, np.floating):
        raise UsageError(f"{backend} calibration data: expected float32, got {calibration.dtype}")
    return calibration.astype(np.float32, copy=False)


def calibration_feeds(calibration: numpy.ndarray | dict[str, numpy.ndarray] | None,
                      expected: dict[str, list[int | None]], backend: str) -> dict[str, numpy.ndarray]:
    """Calibration samples as the model's feeds, {input name: N x ... array}, checked against
    the model's inputs (`expected`: name -> shape, None for dynamic dims). One array is a
    one-input model's input (float32); named arrays (token ids and masks) keep integer dtypes."""
    import numpy as np

    if not isinstance(calibration, dict):
        if len(expected) != 1:
            raise UsageError(f"{backend} int8 export: the model has inputs {list(expected)}; "
                             "the calibration data is one array",
                             "give one calibration array per input name")
        (name, shape), = expected.items()
        return {name: check_calibration(calibration, shape, name, backend)}
    if set(calibration) != set(expected):
        raise UsageError(f"{backend} calibration data: expected inputs {list(expected)}, "
                         f"got {list(calibration)}", "give one calibration array per input name")
    feeds = {}
    for name, shape in expected.items():
        array = np.asarray(calibration[name])
        if array.dtype.kind in "iub":
            _check_shape(array, shape, name, backend)
            feeds[name] = array.astype(np.int64, copy=False) if array.dtype.kind != "b" else array
        else:
            feeds[name] = check_calibration(array, shape, name, backend)
    if len({len(a) for a in feeds.values()}) != 1:
        raise UsageError(f"{backend} calibration data: every input needs as many samples, got "
                         + ", ".join(f"{k} {len(a)}" for k, a in feeds.items()))
    return feeds


def _check_shape(calibration: numpy.ndarray, expected: list[int | None], input_name: str, backend: str) -> None:
    sample = list(calibration.shape[1:])
    if len(calibration.shape) != len(expected) or any(
        e is not None and e != a for e, a in zip(expected[1:], sample)
    ):
        shown = ["N" if d is None else d for d in expected]
        raise UsageError(
            f"{backend} calibration data for input {input_name!r}: expected shape {shown}, "
            f"got {list(calibration.shape)}",
            "calibration samples must have the model's input shape, stacked on a batch axis",
        )


def feed_rows(feeds: dict[str, numpy.ndarray], start: int, stop: int) -> dict[str, numpy.ndarray]:
    """Samples start..stop of every input (a batch for a quantizer's calibration loop)."""
    return {k: v[start:stop] for k, v in feeds.items()}


def check_request(backend: str, accepts: tuple[str, ...], precisions: tuple[str, ...],
                  source: Artifact, precision: str) -> None:
    """UsageError unless `backend` converts this kind of source at this precision."""
    if source.kind not in accepts:
        raise UsageError(f"{backend} exports from {' or '.join(accepts)}, got a {source.kind} "
                         f"artifact ({source.path})")
    if precision not in precisions:
        raise UsageError(f"{backend} does not support precision {precision!r}; "
                         f"supported: {', '.join(precisions)}")


# What an int8 artifact made from a prequantized source records of how it was quantized.
PREQUANTIZED_KEYS = ("quantized_by", "quantizer", "quantization_config")


def prequantized(backend: str, source: Artifact, precision: str) -> dict | None:
    """For a source quantized already (precision "int8": a QAT student's QDQ ONNX or converted
    program, compress/qat.py), what it records of its quantization, the meta of the INT8
    artifact converted from it as is, without calibration; None for a float source. Any other
    precision is refused: the quantization cannot be undone."""
    if source.precision != "int8":
        return None
    if precision != "int8":
        raise UsageError(f"{backend}: {source.path} is quantized already (int8); it cannot be "
                         f"exported at {precision}", "export the float intermediate instead")
    return {"prequantized": True, **{k: source.meta[k] for k in PREQUANTIZED_KEYS if k in source.meta}}
