"""From a torch model to the intermediates (ONNX, torch.export programs), and the checks and
file-staging helpers every backend export shares.

torch and onnx are imported inside functions: backend modules import this one at module level,
and importing a backend must not import any runtime (torch included).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.errors import ExportError, UnsafeModelError, UsageError

if TYPE_CHECKING:
    import numpy
    import onnx
    import torch

ONNX_EXPORTER = "torch.onnx dynamo"
INPUT_NAME = "input"
OUTPUT_NAME = "output"

# Where the operator hides in the exporters' messages, most specific first.
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


# ---------------------------------------------------------------- torch -> intermediates


def _batch_dynamic_shapes(dynamic_batch: bool) -> tuple[dict[int, Any], ...] | None:
    import torch

    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


def _export_failure(exporter: str, exc: BaseException, *, opset: int | str | None = None,
                    captured: str = "") -> ExportError:
    text = f"{exc}\n{exc.__cause__ or ''}\n{captured}"
    op = operator_from_message(text)
    parts = [f"{exporter} export failed"]
    if opset is not None:
        parts.append(f"opset {opset}")
    if op:
        parts.append(f"unsupported operator {op}")
    hint = None
    if "batch" in text and ("specializ" in text.lower() or "constraint" in text.lower()):
        hint = "the model fixes its batch size; export with dynamic_batch=False"
    return ExportError(f"{', '.join(parts)}: {type(exc).__name__}: {first_line(str(exc))}", hint)


def _default_onnx_opset() -> int | str:
    # The exporter's default lives in a private module; the message names it when it can.
    try:
        from torch.onnx._constants import ONNX_DEFAULT_OPSET
    except ImportError:
        return "default"
    return ONNX_DEFAULT_OPSET


def _input_shape(example: "torch.Tensor", dynamic_batch: bool) -> list[int | None]:
    return [None if (i == 0 and dynamic_batch) else int(d) for i, d in enumerate(example.shape)]


def export_onnx(model: "torch.nn.Module", example: "torch.Tensor", out_path: Path, *,
                role: str = "student", dynamic_batch: bool = True,
                opset: int | None = None) -> Artifact:
    """Export `model` to ONNX with the dynamo-based exporter; weights inline unless past 2 GB.

    The graph has one input "input" (batch axis dynamic when asked) and one output "output".
    Any failure is an ExportError naming the exporter, the opset and the operator where known;
    there is no fallback to the legacy TorchScript exporter.
    """
    import torch

    out_path = Path(out_path)
    model = model.eval()
    start = time.perf_counter()
    with quiet_stdout() as captured:
        try:
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=_batch_dynamic_shapes(dynamic_batch),
            )
        except Exception as e:  # the exporter raises many types; all mean "could not export"
            raise _export_failure(ONNX_EXPORTER, e, opset=opset or _default_onnx_opset(),
                                  captured=captured.getvalue()) from e
    with staged_output(out_path) as tmp_path:
        # external_data=False keeps weights inline; the exporter still switches to external data
        # on its own past ONNX's 2 GB protobuf limit, and staged_output moves the .data along.
        program.save(tmp_path, external_data=False)
        _, input_shape = onnx_input(check_onnx_external_data(tmp_path))
        if dynamic_batch and input_shape[0] is not None:
            # The exporter applies torch.export's "suggested fixes" on its own, which quietly
            # turns a batch axis the model fixes into a constant.
            raise ExportError(f"{ONNX_EXPORTER} export made the batch axis static "
                              f"(input shape {input_shape}) although a dynamic one was asked",
                              "the model fixes its batch size; export with dynamic_batch=False")
    return Artifact(
        kind="onnx", path=out_path, precision="fp32", role=role,  # type: ignore[arg-type]
        meta={
            "exporter": ONNX_EXPORTER,
            "torch": torch.__version__,
            "opset": program.model.opset_imports.get(""),
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_shape": input_shape,
            "input_dtype": str(example.dtype).removeprefix("torch."),
            "dynamic_batch": dynamic_batch,
            "external_data": Path(str(out_path) + ".data").exists(),
            "export_s": round(time.perf_counter() - start, 3),
        },
    )


def export_program(model: "torch.nn.Module", example: "torch.Tensor", out_path: Path, *,
                   role: str = "student", dynamic_batch: bool = True) -> Artifact:
    """Export `model` with torch.export and save the program (.pt2), the input ExecuTorch takes."""
    import torch

    out_path = Path(out_path)
    model = model.eval()
    start = time.perf_counter()
    with quiet_stdout() as captured:
        try:
            program = torch.export.export(
                model, (example,), dynamic_shapes=_batch_dynamic_shapes(dynamic_batch)
            )
        except Exception as e:
            raise _export_failure("torch.export", e, captured=captured.getvalue()) from e
    with staged_output(out_path) as tmp_path:
        torch.export.save(program, tmp_path)
    return Artifact(
        kind="exported_program", path=out_path, precision="fp32", role=role,  # type: ignore[arg-type]
        meta={
            "exporter": "torch.export",
            "torch": torch.__version__,
            "input_shape": _input_shape(example, dynamic_batch),
            "input_dtype": str(example.dtype).removeprefix("torch."),
            "dynamic_batch": dynamic_batch,
            "export_s": round(time.perf_counter() - start, 3),
        },
    )


# ---------------------------------------------------------------- ONNX safety check


def _graph_tensors(graph: "onnx.GraphProto") -> Iterator["onnx.TensorProto"]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: "onnx.NodeProto") -> Iterator["onnx.TensorProto"]:
    # Constants and subgraphs (If/Loop/Scan bodies) can carry external data too.
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _model_tensors(model: "onnx.ModelProto") -> Iterator["onnx.TensorProto"]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _escape_reason(location: str, folder: Path) -> str | None:
    """Why an external-data location is unsafe, or None when it stays inside `folder`."""
    if not location:
        return "is empty"
    posix = location.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(location).drive or os.path.isabs(location):
        return "is an absolute path"
    if os.path.normpath(posix).split("/")[0] == "..":
        return "uses '..' to leave the model's folder"
    resolved = (folder / PurePosixPath(posix)).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        return f"resolves (through a symlink) to {resolved}, outside the model's folder"
    return None


def check_onnx_external_data(path: Path) -> "onnx.ModelProto":
    """Refuse an ONNX model whose external data would be read from outside its own folder.

    Reads the graph only (no external data) and returns it, so callers can inspect inputs
    without parsing twice. Unsafe locations raise UnsafeModelError (exit 6) before onnx or any
    runtime follows them; an unreadable file raises UsageError naming the format.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends on damaged bytes
        raise UsageError(f"{path}: not a readable ONNX model (truncated or corrupt): "
                         f"{type(e).__name__}: {first_line(str(e))}",
                         "re-export the model; check the copy is complete") from e
    if not model.graph.node or not model.graph.output:
        raise UsageError(f"{path}: not a valid ONNX model (empty graph; truncated or corrupt?)",
                         "re-export the model; check the copy is complete")
    folder = path.parent
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if reason := _escape_reason(location, folder):
            raise UnsafeModelError(
                f"{path}: external data of tensor {tensor.name!r} at {location!r} {reason}; "
                "refused before any runtime opens it",
                "keep external data files in the model's folder under a relative name, "
                "e.g. onnx.save(model, path, save_as_external_data=True, location='model.onnx.data')",
            )
        if not (folder / location).is_file():
            raise UsageError(f"{path}: external data file {location!r} of tensor "
                             f"{tensor.name!r} is missing", "copy the .data file beside the model")
    return model


def has_external_data(model: "onnx.ModelProto") -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _model_tensors(model))


def onnx_input(model: "onnx.ModelProto") -> tuple[str, list[int | None]]:
    """Name and shape (None for symbolic dims) of the model's first real input."""
    initializers = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in initializers)
    dims = first.type.tensor_type.shape.dim
    return first.name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


# ---------------------------------------------------------------- calibration data


def check_calibration(calibration: "numpy.ndarray | None", expected: list[int | None],
                      input_name: str, backend: str) -> "numpy.ndarray":
    """The calibration array as float32, or UsageError naming expected and actual shapes."""
    import numpy as np

    if calibration is None or len(calibration) == 0:
        raise UsageError(f"{backend} int8 export needs calibration data; none was given",
                         "pass calibration samples (N x C x H x W float32)")
    calibration = np.asarray(calibration)
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
    if not np.issubdtype(calibration.dtype, np.floating):
        raise UsageError(f"{backend} calibration data: expected float32, got {calibration.dtype}")
    return calibration.astype(np.float32, copy=False)


def check_request(backend: str, accepts: tuple[str, ...], precisions: tuple[str, ...],
                  source: Artifact, precision: str) -> None:
    """UsageError unless `backend` converts this kind of source at this precision."""
    if source.kind not in accepts:
        raise UsageError(f"{backend} exports from {' or '.join(accepts)}, got a {source.kind} "
                         f"artifact ({source.path})")
    if precision not in precisions:
        raise UsageError(f"{backend} does not support precision {precision!r}; "
                         f"supported: {', '.join(precisions)}")
