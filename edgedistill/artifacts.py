"""The files that flow between stages, described by small dataclasses that round-trip to JSON."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# What a file is, not which runtime runs it: a backend declares which kinds it accepts.
ArtifactKind = Literal["onnx", "exported_program", "openvino_ir", "pte", "tensorrt_plan", "tflite", "ort",
                       "mlpackage"]
Precision = Literal["fp32", "fp16", "int8"]


@dataclass
class Artifact:
    kind: ArtifactKind
    path: Path
    precision: Precision = "fp32"
    role: Literal["teacher", "student"] = "student"
    backend: str | None = None  # the runtime this artifact is for; None for an intermediate
    meta: dict[str, Any] = field(default_factory=dict)
    # What tells apart artifacts of one backend and precision built for different devices (an
    # .ort's target platform, "arm" or "amd64"); part of the name, so they never collide.
    variant: str | None = None
    # Which student it was made from when not the distilled one as is: "prune0.5" (compress/prune.py).
    form: str | None = None

    @property
    def name(self) -> str:
        """A stable label for tables: role[-form]-precision-backend[-variant]."""
        return "-".join(p for p in (self.role, self.form, self.precision, self.backend or self.kind, self.variant) if p)

    def files(self) -> list[Path]:
        """Every file the artifact consists of (an IR has .xml and .bin; ONNX may have .data; an
        .mlpackage is a folder: every file in it)."""
        main = Path(self.path)
        if self.kind == "mlpackage":
            return sorted(p for p in main.rglob("*") if p.is_file()) if main.is_dir() else [main]
        companions = [main.with_suffix(".bin")] if self.kind == "openvino_ir" else []
        companions += [Path(str(main) + ".data"), main.with_suffix(".onnx.data")]
        return [main] + [p for p in dict.fromkeys(companions) if p.exists() and p != main]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Artifact:
        return cls(**{**d, "path": Path(d["path"])})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a normal file respects the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
