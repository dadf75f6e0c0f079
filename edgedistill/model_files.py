"""What a model file handed to `edgedistill bench PATH` is: its kind, the runtimes that read it,
every file it consists of, and the safety checks it passes before any runtime opens it.

A model file is an artifact that did not come from the pipeline (DESIGN.md): once checked here
it becomes a `FileArtifact` and goes through the same harness as the pipeline's own. Nothing in
this module imports a runtime (onnx only, inside functions, to read an ONNX graph's external
data), so every bad input is refused in the parent before a probe starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.artifacts import Artifact, sha256_file
from edgedistill.errors import UnsafeModelError, UsageError
from edgedistill.onnx_files import _escape_reason, check_onnx_external_data, external_data_locations
from edgedistill.trust import ENGINE_SUFFIXES

# suffix -> (artifact kind, the runtime that reads it unless --backend says otherwise)
KINDS: dict[str, tuple[str, str]] = {
    ".onnx": ("onnx", "onnxruntime"),
    ".ort": ("ort", "onnxruntime"),  # ONNX Runtime's own (mobile) format
    ".xml": ("openvino_ir", "openvino"),
    ".pte": ("pte", "executorch"),
    ".tflite": ("tflite", "litert"),  # LiteRT (TFLite) flatbuffer
}
# kind -> every runtime that reads it directly (OpenVINO and TensorRT parse ONNX themselves).
READERS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "openvino", "tensorrt"),
    "ort": ("onnxruntime", "ort-mobile"),  # the same session; ort-mobile budgets apply under that name
    "openvino_ir": ("openvino",),
    "pte": ("executorch",),
    "tflite": ("litert",),
}
_FORMATS = ("an .onnx (with its external data), an OpenVINO .xml (with its .bin), an ExecuTorch .pte, "
            "an ONNX Runtime .ort or a LiteRT .tflite")
# ONNX operators that only a quantized graph has.
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear"}


@dataclass
class FileArtifact(Artifact):
    """An artifact the user gave: named by its file (`model-onnxruntime`), with its companions
    (external data, the IR's .bin) as checked, not guessed from the name."""

    label: str = ""
    companions: list[Path] = field(default_factory=list)
    given: Path | None = None  # the user's file when what runs was built from it (a TensorRT engine)

    @property
    def name(self) -> str:
        return self.label or super().name

    def files(self) -> list[Path]:
        return [Path(self.path), *self.companions]

    def source(self) -> dict:
        """Where the model came from, as the results record it."""
        given = Path(self.given or self.path)
        out = {"path": str(given.absolute()), "sha256": sha256_file(given), "given_by": "user"}
        if self.given is not None:
            out["built"] = {"path": str(self.path), "by": f"{self.backend}, on this machine, from the given file"}
        return out


def build_engine(art: FileArtifact, folder: Path) -> FileArtifact:
    """A TensorRT engine built here from the user's ONNX (engines are never taken from a user):
    the artifact that runs is the engine, its source stays the ONNX file."""
    from edgedistill.backends.base import get_backend

    built = get_backend("tensorrt").export(Artifact(kind="onnx", path=Path(art.path), role="student"),
                                           Path(folder) / art.name, precision="fp32", calibration=None)
    return FileArtifact(kind="tensorrt_plan", path=Path(built.path), precision=art.precision, role=art.role,
                        backend="tensorrt", label=art.label, meta=built.meta, given=Path(art.path))


@dataclass(frozen=True)
class ModelFile:
    """One checked model file: its kind, its companions and a cheap guess at its precision."""

    path: Path
    kind: str
    companions: tuple[Path, ...]
    precision: str

    @property
    def default_backend(self) -> str:
        return KINDS[self.path.suffix.lower()][1]


def inspect(path: Path) -> ModelFile:
    """Check one model file; every way it can be wrong is one line naming expected and found."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        raise UnsafeModelError(
            f"refusing {path}: a TensorRT engine is native code built for one GPU model and one TensorRT "
            "version, and is never loaded from a user (RELIABILITY 6)",
            f"give the ONNX model it was built from: `edgedistill bench {path.with_suffix('.onnx')} "
            "--backend tensorrt` rebuilds the engine on the target itself")
    if suffix == ".bin":
        xml = path.with_suffix(".xml")
        raise UsageError(f"{path}: expected an OpenVINO model's .xml, found its weights file (.bin)",
                         f"pass {xml} (its .bin is read beside it)")
    if suffix == ".mlpackage":
        from edgedistill.backends.coreml import not_runnable_reason

        # A valid model this machine cannot run, every time: a usage error (like any runtime
        # missing here), not an inconclusive measurement that a retry might fix.
        raise UsageError(f"{path}: a Core ML package cannot be measured here: {not_runnable_reason()}",
                         "measure it on a Mac or an iPhone (Xcode's Core ML performance report), "
                         "or bench the .onnx / .pte it was made from")
    if path.is_dir():
        raise UsageError(f"{path}: expected a model file, found a directory",
                         "pass the model file inside it (an OpenVINO model is its .xml)")
    if suffix not in KINDS:
        found = f"a {suffix!r} file" if suffix else "a file without an extension"
        raise UsageError(f"{path}: expected {_FORMATS}, found {found}",
                         "convert it to ONNX first, or pass the file with its real extension")
    if not path.is_file():
        raise UsageError(f"model file not found: {path}", "check the path")
    kind = KINDS[suffix][0]
    if kind == "onnx":
        # Refuses external data outside the model's folder (exit 6) and a missing .data file (exit 2).
        graph = check_onnx_external_data(path)
        companions = tuple(path.parent / loc for loc in external_data_locations(graph))
        return ModelFile(path, kind, companions, _onnx_precision(graph))
    if kind == "openvino_ir":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise UsageError(f"{path}: expected its weights file {weights.name} beside it, found none",
                             f"copy {weights.name} into {path.parent} (openvino.save_model writes both)")
        if reason := _escape_reason(weights.name, path.parent):
            raise UnsafeModelError(f"{path}: its weights file {weights} {reason}; refused before OpenVINO opens it",
                                   "keep the .bin in the model's folder as a plain file")
        return ModelFile(path, kind, (weights,), _ir_precision(path))
    return ModelFile(path, kind, (), "unknown")


def _onnx_precision(graph) -> str:
    import onnx

    if any(n.op_type in _INT8_OPS for n in graph.graph.node):
        return "int8"
    floats = [t.data_type for t in graph.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    if floats and floats.count(onnx.TensorProto.FLOAT16) > len(floats) / 2:
        return "fp16"
    return "fp32"


def _ir_precision(path: Path) -> str:
    # The IR is XML text; a byte search finds the quantization layers without parsing it.
    # An IR saved with FP16-compressed weights still computes in f32 on CPU: it stays "fp32".
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the OpenVINO model ({e.strerror or e})") from None
    return "int8" if b'type="FakeQuantize"' in data else "fp32"


def backends_for(model: ModelFile, asked: list[str]) -> list[str]:
    """The runtimes to measure `model` on: those asked for that read it, else its own."""
    if not asked:
        return [model.default_backend]
    readers = READERS[model.kind]
    wrong = [b for b in asked if b not in readers]
    usable = [b for b in asked if b in readers]
    if wrong and not usable:
        what = {"onnx": "an ONNX model", "ort": "an ONNX Runtime .ort model", "openvino_ir": "an OpenVINO IR",
                "pte": "an ExecuTorch program", "tflite": "a LiteRT .tflite model"}[model.kind]
        raise UsageError(f"{model.path}: --backend {wrong[0]} cannot read {what}; expected one of "
                         f"{', '.join(readers)}",
                         "drop --backend to use the file's own runtime"
                         + (", or export the model to that runtime's format first" if model.kind != "onnx" else ""))
    return usable


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    return _UNSAFE_CHARS.sub("_", text).strip("._") or "model"


def unique_labels(entries: list[tuple[ModelFile, str]]) -> list[str]:
    """`<stem>-<backend>` for each (file, backend), readable and unique: a clash adds the file's
    kind (`model-onnx-onnxruntime` vs `model-ort-onnxruntime`), then its folder, then a number."""
    def label(m: ModelFile, b: str, level: int) -> str:
        parts = [_slug(m.path.stem)]
        if level >= 1:
            parts.append(m.kind)
        if level >= 2:
            parts.insert(0, _slug(m.path.resolve().parent.name))
        # A stem that already names its runtime (student-fp32-onnxruntime) is not named twice.
        if level == 0 and m.path.stem.lower().endswith((f"-{b}", f"_{b}")):
            return parts[0]
        return "-".join([*parts, b])

    levels = [0] * len(entries)
    for _ in range(3):
        labels = [label(m, b, lv) for (m, b), lv in zip(entries, levels)]
        clashes = {x for x in labels if labels.count(x) > 1}
        if not clashes:
            return labels
        levels = [lv + 1 if x in clashes else lv for x, lv in zip(labels, levels)]
    labels = [label(m, b, lv) for (m, b), lv in zip(entries, levels)]
    seen: dict[str, int] = {}
    out = []
    for x in labels:
        seen[x] = seen.get(x, 0) + 1
        out.append(x if labels.count(x) == 1 else f"{x}-{seen[x]}")
    return out


def artifacts_for(models: list[ModelFile], asked: list[str], reference: ModelFile | None = None
                  ) -> tuple[list[FileArtifact], FileArtifact | None]:
    """One FileArtifact per (file, backend), plus the reference's (role teacher: measured once,
    never gated, the one the others' outputs are compared with)."""
    entries = [(m, b) for m in models for b in backends_for(m, asked)]
    ref_entry = None
    if reference is not None:
        readers = [b for b in asked if b in READERS[reference.kind]]
        ref_entry = (reference, readers[0] if readers else reference.default_backend)
    labels = unique_labels(entries + ([ref_entry] if ref_entry else []))

    def make(m: ModelFile, backend: str, label: str, role: str) -> FileArtifact:
        return FileArtifact(kind=m.kind, path=m.path, precision=m.precision, role=role,  # type: ignore[arg-type]
                            backend=backend, label=label, companions=list(m.companions))

    arts = [make(m, b, lab, "student") for (m, b), lab in zip(entries, labels)]
    ref = make(*ref_entry, labels[-1], "teacher") if ref_entry else None
    return arts, ref
