"""Core ML backend: a torch.export program converted by coremltools to an ML Program
(.mlpackage), computing in fp32 or fp16. coremltools is imported inside functions only.

Core ML runs only on Apple platforms: coremltools converts on Linux, but `MLModel.predict`
needs macOS. An .mlpackage made here is therefore never verified, measured or gated here: the
export records it unverified with the reason, the bench skips it with the reason, and `doctor`
says "export only". It is not a failed check (allow_unverified is not needed), and it can never
pass for a verified one. Verifying on macOS is left out: it cannot be tested here.

An .mlpackage is a folder: it is written in a temporary folder beside its final place and
renamed into place, so a reader sees the old complete package or the new complete one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import Artifact
from edgedistill.backends.base import Availability, installed
from edgedistill.backends.common import check_request, first_line, operator_from_message
from edgedistill.errors import ExportError, UsageError
from edgedistill.exporters import inputs_meta

if TYPE_CHECKING:
    import numpy

NAME = "coreml"
EXTRA = "coreml"
ACCEPTS = ("exported_program",)
PRECISIONS = ("fp32", "fp16")
# The oldest OS an ML Program runs on (iOS 15 / macOS 12): the widest reach, recorded in meta.
MINIMUM_DEPLOYMENT_TARGET = "iOS15"
NO_RUNTIME = "no Core ML runtime on Linux: predict() needs macOS"
INSTALL_HINT = "pip install 'edgedistill[coreml]'"


def availability() -> Availability:
    found = installed("coremltools")
    if not found.ok:
        return Availability(False, reason=f"{found.reason} ({INSTALL_HINT})")
    return Availability(True, found.version, note=None if _on_macos() else "export only on Linux (no Core ML runtime)")


def not_runnable_reason() -> str:
    """Why an .mlpackage is not verified or measured here. On macOS too: edgedistill's probe has
    no Core ML session yet (it would need MLModel.predict, untestable on Linux)."""
    return NO_RUNTIME if not _on_macos() else "edgedistill has no Core ML session yet (MLModel.predict is not wired in)"


def _on_macos() -> bool:
    return platform.system() == "Darwin"


def export(source: Artifact, out_dir: Path, *, precision: str,
           calibration: numpy.ndarray | dict[str, numpy.ndarray] | None) -> Artifact:
    """`calibration` is not used: fp16 is a cast, not a calibrated quantization."""
    check_request(NAME, ACCEPTS, PRECISIONS, source, precision)
    if not installed("coremltools").ok:
        raise UsageError(f"the {NAME} backend needs coremltools, which is not installed", INSTALL_HINT)
    import torch

    start = time.perf_counter()
    program = torch.export.load(str(source.path))
    inputs = _inputs(program)
    out_path = Path(out_dir) / f"{source.role}-{precision}-{NAME}.mlpackage"
    with _quiet() as captured:
        import coremltools as ct

        try:
            model = ct.convert(
                program.run_decompositions({}), convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                inputs=[ct.TensorType(name=name, shape=shape) for name, shape, _ in inputs],
                minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
            )
        except Exception as e:  # coremltools raises anything from NotImplementedError to ValueError
            op = operator_from_message(f"{e}\n{e.__cause__ or ''}\n{captured.getvalue()}") or _mil_operator(str(e))
            raise ExportError(f"{NAME} conversion (coremltools {ct.__version__}, ct.convert to mlprogram) failed"
                              f"{f' at operator {op}' if op else ''}: {type(e).__name__}: {first_line(str(e))}",
                              "try another backend for this model, or replace the operator") from e
        save_package(model, out_path)
    spec = model.get_spec()
    meta: dict[str, Any] = {
        "converter": "coremltools.convert (mlprogram)", "coremltools": ct.__version__,
        "compute_precision": "FLOAT16" if precision == "fp16" else "FLOAT32",
        "minimum_deployment_target": MINIMUM_DEPLOYMENT_TARGET,
        "specification_version": spec.specificationVersion,
        "inputs": inputs_meta([n for n, _, _ in inputs], [t for _, _, t in inputs], [s for _, s, _ in inputs]),
        "outputs": [o.name for o in spec.description.output],
        "source_path": str(source.path), "export_s": round(time.perf_counter() - start, 3),
    }
    return Artifact(kind="mlpackage", path=out_path, precision=precision, role=source.role,  # type: ignore[arg-type]
                    backend=NAME, meta=meta)


def _inputs(program) -> list[tuple[str, list[int], Any]]:
    """(name, static shape, example tensor) of every user input in the program's order; Core ML's
    TensorType takes fixed shapes here (a range needs ct.RangeDim, not wired in)."""
    import torch

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta["val"]
        dims = list(value.shape)
        if any(not isinstance(d, int) for d in dims):
            raise ExportError(f"{NAME} needs static input shapes; the program's input {name!r} has shape {dims}",
                              "export the program with a static batch (dynamic_batch=False)")
        out.append((name, dims, torch.zeros(dims, dtype=value.dtype)))
    return out


def _mil_operator(text: str) -> str | None:
    """coremltools names an operator it cannot convert as "Unsupported fx node <name>, kind <op>"
    or "PyTorch convert function for op '<op>' not implemented"."""
    import re

    m = re.search(r"kind (\S+)", text) or re.search(r"for op '([^']+)'", text)
    return m.group(1).rstrip(",.") if m else None


def save_package(model: Any, out_path: Path) -> None:
    """Save the .mlpackage folder atomically: into a temporary folder beside it, then renamed
    into place; an earlier package of the same name is moved aside first and removed after."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        staged = work / out_path.name
        model.save(str(staged))
        if not (staged / "Manifest.json").is_file():
            raise ExportError(f"{NAME}: coremltools saved no Manifest.json in {out_path.name}")
        old = work / "previous"
        if out_path.exists():  # rename(2) replaces only an empty folder: move the old one aside
            os.replace(out_path, old)
        os.replace(staged, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """coremltools prints progress bars (to stderr), warns through logging that this torch and
    scikit-learn are untested, and at import that its macOS-only proxies are missing: kept from
    the terminal, and available to attach to an error."""
    buffer = io.StringIO()
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        logger.setLevel(level)
