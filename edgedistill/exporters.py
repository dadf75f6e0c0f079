"""From a torch model to the intermediates every backend starts from: an ONNX file
(torch.onnx.export with dynamo=True) or a torch.export program (.pt2).

torch and onnx are imported inside functions: backend modules import this one at module level,
and importing a backend must not import any runtime (torch included).
"""

from __future__ import annotations

import time
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
from edgedistill.onnx_files import check_onnx_external_data, onnx_input

if TYPE_CHECKING:
    import torch

ONNX_EXPORTER = "torch.onnx dynamo"
INPUT_NAME = "input"
OUTPUT_NAME = "output"


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


def _input_shape(example: torch.Tensor, dynamic_batch: bool) -> list[int | None]:
    return [None if (i == 0 and dynamic_batch) else int(d) for i, d in enumerate(example.shape)]


def export_onnx(model: torch.nn.Module, example: torch.Tensor, out_path: Path, *,
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


def export_program(model: torch.nn.Module, example: torch.Tensor, out_path: Path, *,
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
