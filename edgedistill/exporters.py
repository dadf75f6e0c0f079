"""From a torch model to the intermediates every backend starts from: an ONNX file
(torch.onnx.export with dynamo=True) or a torch.export program (.pt2).

torch and onnx are imported inside functions: backend modules import this one at module level,
and importing a backend must not import any runtime (torch included).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.backends.common import (
    first_line,
    operator_from_message,
    quiet_stdout,
    staged_output,
)
from edgedistill.errors import ExportError
from edgedistill.onnx_files import check_onnx_external_data, onnx_inputs

if TYPE_CHECKING:
    import torch

    from edgedistill.data.inputs import Inputs

ONNX_EXPORTER = "torch.onnx dynamo"
INPUT_NAME = "input"
OUTPUT_NAME = "output"


# ---------------------------------------------------------------- torch -> intermediates


def _traced(model: torch.nn.Module, example: Inputs) -> tuple[torch.nn.Module, tuple, list[str]]:
    """What the exporters trace: the model, its positional example inputs and their names. Named
    inputs go through data.inputs.Positional, in the order of the model's forward parameters."""
    from edgedistill.data.inputs import Positional, in_forward_order

    if not isinstance(example, dict):
        return model, (example,), [INPUT_NAME]
    ordered = in_forward_order(model, example)
    return Positional(model, list(ordered)).eval(), tuple(ordered.values()), list(ordered)


def _dynamic_shapes(args: tuple, dynamic_batch: bool, sequence: bool, named: bool) -> Any:
    """A dynamic batch axis on every input; with `sequence`, axis 1 of every N×L integer input
    (token ids, masks) too, left to torch.export to keep or to fix (Dim.AUTO): a model whose
    positions are fixed in size exports with the data's length instead of failing."""
    import torch

    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch", min=1)

    def axes(t: torch.Tensor) -> dict[int, Any]:
        token_like = sequence and t.dim() == 2 and not t.is_floating_point()
        return {0: batch, 1: torch.export.Dim.AUTO} if token_like else {0: batch}
    shapes = tuple(axes(t) for t in args)
    return {"args": shapes} if named else shapes  # Positional.forward(*args): one tuple for all


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


def _input_shape(example: torch.Tensor, dynamic_batch: bool) -> list[int | None]:
    return [None if (i == 0 and dynamic_batch) else int(d) for i, d in enumerate(example.shape)]


def inputs_meta(names: list[str], args: tuple, shapes: list[list[int | None]]) -> list[dict[str, Any]]:
    """artifact.meta["inputs"]: each input's name, shape (None: dynamic) and dtype, in order."""
    return [{"name": n, "shape": shape, "dtype": str(t.dtype).removeprefix("torch.")}
            for n, t, shape in zip(names, args, shapes, strict=True)]


def export_onnx(model: torch.nn.Module, example: Inputs, out_path: Path, *,
                role: str = "student", dynamic_batch: bool = True,
                opset: int | None = None) -> Artifact:
    """Export `model` to ONNX with the dynamo-based exporter; weights inline unless past 2 GB.

    One tensor gives a graph with one input "input"; named inputs keep their names (input_ids,
    attention_mask, ...). The batch axis is dynamic when asked, and then so is the sequence axis
    of token inputs where the model allows it (meta["dynamic_sequence"] says which). One output,
    "output". Any failure is an ExportError naming the exporter, the opset and the operator where
    known; there is no fallback to the legacy TorchScript exporter.
    """
    import torch

    out_path = Path(out_path)
    model = model.eval()
    traced, args, names = _traced(model, example)
    start = time.perf_counter()
    with quiet_stdout() as captured, warnings.catch_warnings():
        # "The axis name: batch will not be used, since it shares the same shape constraints
        # with another axis": the exporter's note on inputs that share an axis, not a problem.
        warnings.filterwarnings("ignore", message=r".*The axis name", category=UserWarning)
        try:
            program = torch.onnx.export(
                traced, args, None, dynamo=True, verbose=False,
                input_names=names, output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=_dynamic_shapes(args, dynamic_batch, sequence=True, named=isinstance(example, dict)),
            )
        except Exception as e:  # the exporter raises many types; all mean "could not export"
            raise _export_failure(ONNX_EXPORTER, e, opset=opset or _default_onnx_opset(),
                                  captured=captured.getvalue()) from e
    with staged_output(out_path) as tmp_path:
        # external_data=False keeps weights inline; the exporter still switches to external data
        # on its own past ONNX's 2 GB protobuf limit, and staged_output moves the .data along.
        program.save(tmp_path, external_data=False)
        shapes = list(onnx_inputs(check_onnx_external_data(tmp_path)).values())
        input_shape = shapes[0]
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
            "input_name": names[0],
            "output_name": OUTPUT_NAME,
            "input_shape": input_shape,
            "input_dtype": str(args[0].dtype).removeprefix("torch."),
            "inputs": inputs_meta(names, args, shapes),
            "dynamic_batch": dynamic_batch,
            # Token inputs' axis 1: dynamic, or fixed at the data's sequence length (recorded).
            **({"dynamic_sequence": all(s[1] is None for s, t in zip(shapes, args) if t.dim() == 2
                                        and not t.is_floating_point())}
               if isinstance(example, dict) and dynamic_batch else {}),
            "external_data": Path(str(out_path) + ".data").exists(),
            "export_s": round(time.perf_counter() - start, 3),
        },
    )


def export_program(model: torch.nn.Module, example: Inputs, out_path: Path, *,
                   role: str = "student", dynamic_batch: bool = True) -> Artifact:
    """Export `model` with torch.export and save the program (.pt2), the input ExecuTorch takes.
    Named inputs become positional, in the order of the model's forward parameters."""
    import torch

    out_path = Path(out_path)
    model = model.eval()
    traced, args, names = _traced(model, example)
    start = time.perf_counter()
    with quiet_stdout() as captured:
        try:
            program = torch.export.export(
                traced, args, dynamic_shapes=_dynamic_shapes(args, dynamic_batch, sequence=False,
                                                 named=isinstance(example, dict))
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
            "input_shape": _input_shape(args[0], dynamic_batch),
            "input_dtype": str(args[0].dtype).removeprefix("torch."),
            "inputs": inputs_meta(names, args, [_input_shape(t, dynamic_batch) for t in args]),
            "dynamic_batch": dynamic_batch,
            "export_s": round(time.perf_counter() - start, 3),
        },
    )


def static_example(program: torch.export.ExportedProgram, backend: str) -> tuple[torch.Tensor, ...]:
    """Zero inputs of the program's shapes with batch 1, one per input in its order, for the
    backends that convert a static batch (ExecuTorch plans memory ahead of time; LiteRT's
    converter fixes every shape). Other dims must be static: a dynamic one is refused here,
    naming the input and its shape, before any converter runs."""
    import torch

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    example = []
    for name in program.graph_signature.user_inputs:  # in the program's input order
        node = placeholders[name]
        value = node.meta["val"]
        dims = list(value.shape)
        if any(not isinstance(d, int) for d in dims[1:]):
            raise ExportError(f"{backend} needs static input dims except the batch axis; "
                              f"the program's input {node.name!r} has shape {dims}",
                              "export the program with fixed spatial dims (and sequence length)")
        example.append(torch.zeros([1, *dims[1:]], dtype=value.dtype))
    return tuple(example)
