"""The small protocol every runtime backend implements, and the registry that finds them.

A backend module lives in this package and defines, at module level:

    NAME: str                       registry name ("onnxruntime")
    EXTRA: str | None               pip extra that installs it ("openvino"), None if core
    ACCEPTS: tuple[ArtifactKind]    source kinds it converts from ("onnx",)
    PRECISIONS: tuple[Precision]    precisions its export supports
    def availability() -> Availability
    def export(source, out_dir, *, precision, calibration) -> Artifact

Loading and running happen in the probe (edgedistill/probe/runtimes.py), in a fresh process,
so the parent never imports a runtime and every backend is timed by the same loop.
Backend modules import their runtime inside functions only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edgedistill.errors import UsageError

# name -> (module, pip extra). A static table so that listing backends imports nothing.
BACKENDS: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("edgedistill.backends.onnxruntime", None),
    "openvino": ("edgedistill.backends.openvino", "openvino"),
    "executorch": ("edgedistill.backends.executorch", "executorch"),
    "tensorrt": ("edgedistill.backends.tensorrt", "tensorrt"),
    "litert": ("edgedistill.backends.litert", "litert"),
    "ort-mobile": ("edgedistill.backends.ort_mobile", None),
    "coreml": ("edgedistill.backends.coreml", "coreml"),
}


@dataclass(frozen=True)
class Availability:
    ok: bool
    version: str | None = None
    reason: str | None = None  # why not usable, and what fixes it
    # What a usable backend cannot do here, for `doctor` ("export only on Linux (no Core ML
    # runtime)"); see not_runnable() for what the pipeline does about it.
    note: str | None = None


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(BACKENDS)}"
        raise UsageError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}", hint)
    return importlib.import_module(BACKENDS[name][0])


def not_runnable(name: str) -> str | None:
    """Why artifacts of backend `name` cannot be run on this machine at all (no runtime exists
    for it here, e.g. Core ML on Linux), or None. Such artifacts are exported but never verified,
    measured or gated; they are recorded as unverified and skipped, with this reason. A backend
    module says so with an optional `not_runnable_reason()`."""
    reason = getattr(get_backend(name), "not_runnable_reason", None)
    return reason() if reason is not None else None


def installed(module: str) -> Availability:
    """Usable when the module can be found (without importing it); its distribution's version."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return Availability(False, reason=f"the {module} package is not installed")
    return Availability(True, package_version(module))


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
