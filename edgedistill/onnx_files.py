"""ONNX files before any runtime opens them: external data that stays inside the model's
folder (a `location` of `../x`, `/etc/hostname` or a symlink out is refused), and what the
graph declares as its input.

onnx is imported inside functions, so importing this module imports no runtime.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from edgedistill.backends.common import first_line
from edgedistill.errors import UnsafeModelError, UsageError

if TYPE_CHECKING:
    import onnx


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
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


def _model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
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


def check_onnx_external_data(path: Path) -> onnx.ModelProto:
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


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """The relative file names the model's external data lives in (empty: all inline)."""
    import onnx

    return sorted({e.value for t in _model_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
                   for e in t.external_data if e.key == "location"})


def has_external_data(model: onnx.ModelProto) -> bool:
    return bool(external_data_locations(model))


def onnx_input(model: onnx.ModelProto) -> tuple[str, list[int | None]]:
    """Name and shape (None for symbolic dims) of the model's first real input."""
    return next(iter(onnx_inputs(model).items()))


def onnx_inputs(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every real input (not an initializer), in the graph's order: name -> shape (None for
    symbolic dims)."""
    initializers = {t.name for t in model.graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input if i.name not in initializers}
