"""The loading policy for model files: what is data, what is a program, and when a program runs.

Data formats (safetensors, ONNX with its external data inside the model's folder) are parsed
and never run. A pickle (a .pt/.pth checkpoint, zip or legacy) is read by torch's weights_only
unpickler, which refuses any import outside its allowlist. A torch.export .pt2 is a program:
torch.export.load evaluates expression strings from the archive through sympy (eval), so no
scan of its members can make it safe; it is loaded only when trusted. A TensorRT engine is
native code for one GPU and one TensorRT version, and is never loaded as a model.

Trust is by content: a file is trusted when the sha256 of the bytes about to be loaded is one
the user named (`--trust-sha256`, `[teacher]/[student] trust_sha256`), or, for a .pt2, when a
manifest of the run folder records those bytes as written by this pipeline. The file is read
once and loaded from memory, so it cannot be swapped between the check and the load.
docs/security.md states the policy for users.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgedistill.config import SHA256_PATTERN
from edgedistill.errors import UnsafeModelError, UsageError

if TYPE_CHECKING:
    import torch

_SHA256 = re.compile(SHA256_PATTERN)
_SHOW = 8  # how many unsafe imports an error lists
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class ModelFile:
    """A model file's bytes as read once, and their sha256: what is checked is what is loaded."""

    path: Path
    data: bytes
    sha256: str

    @classmethod
    def read(cls, path: Path, role: str, what: str) -> ModelFile:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"loading {role} {what}: file not found: {path}")
        data = path.read_bytes()
        return cls(path, data, hashlib.sha256(data).hexdigest())

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def trusted_hashes(values: Iterable[str | None]) -> frozenset[str]:
    """Normalized (lower-case) sha256 values; a value that is not 64 hex digits is exit 2."""
    out = set()
    for value in values:
        if value is None:
            continue
        if not _SHA256.fullmatch(value):
            raise UsageError(f"a trusted sha256 must be 64 hexadecimal digits, found {value!r}",
                             "print a file's hash with `sha256sum FILE`")
        out.add(value.lower())
    return frozenset(out)


def _how_to_trust(role: str, digest: str) -> str:
    return (f'if you trust this exact file, pass --trust-sha256 {digest} or set '
            f'trust_sha256 = "{digest}" in [{role}]; see docs/security.md')


def _safe_alternatives(role: str) -> str:
    onnx = ", or an .onnx teacher" if role == "teacher" else ""
    return f"give a pkg.mod:factory spec with .safetensors weights{onnx}"


# ---------------------------------------------------------------- torch.export programs


def load_program(file: ModelFile, role: str, trusted: frozenset[str],
                 pipeline_dir: Path | None = None) -> torch.nn.Module:
    """A .pt2 as a module, only if its bytes are trusted or recorded by the pipeline (else exit 6)."""
    import torch

    unreadable = f"loading {role} model: {file.path} is not a readable torch.export .pt2 archive"
    if not zipfile.is_zipfile(file.stream()):  # reading a zip directory runs nothing
        raise UsageError(f"{unreadable} (not a zip archive; truncated or not a .pt2)",
                         "re-export it with torch.export.save")
    if file.sha256 not in trusted and not written_by_pipeline(file, pipeline_dir):
        raise UnsafeModelError(
            f"refusing to load {role} model {file.path} (sha256 {file.sha256}): a torch.export .pt2 "
            "is a program (torch.export.load evaluates expressions stored in it), and this file is "
            "neither trusted by its sha256 nor recorded as written by this pipeline",
            f"{_safe_alternatives(role)}; {_how_to_trust(role, file.sha256)}",
        )
    try:
        return torch.export.load(file.stream()).module()
    except Exception as e:  # a damaged archive fails in many ways inside torch
        raise UsageError(f"{unreadable} ({type(e).__name__}: {_first_line(str(e))})",
                         "re-export it with torch.export.save") from e


def written_by_pipeline(file: ModelFile, pipeline_dir: Path | None) -> bool:
    """Whether these bytes are a file a stage wrote under `pipeline_dir` (the run's --out-dir)
    and recorded in its manifest. Only there: a manifest is no signature, and anyone who hands
    over a .pt2 can put a manifest beside it; the out dir is the folder this pipeline writes."""
    from edgedistill.stages import recorded_by_pipeline

    if pipeline_dir is None or not file.path.resolve().is_relative_to(Path(pipeline_dir).resolve()):
        return False
    return recorded_by_pipeline(file.path, sha256=file.sha256)


# ---------------------------------------------------------------- pickles


def load_checkpoint(path: Path, role: str, trusted: frozenset[str]) -> object:
    """torch.load of a .pt/.pth: weights_only=True, passed explicitly (so the environment's
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot weaken it), unless the user trusts these bytes."""
    import torch

    file = ModelFile.read(path, role, "weights") if trusted else None
    if file is not None and file.sha256 in trusted:  # trust: the user vouches for this program; run it
        try:
            return torch.load(file.stream(), weights_only=False, map_location="cpu")
        except Exception as e:  # noqa: BLE001 -- damaged, or the user's own code failing
            raise _unreadable(file.path, role, e) from e
    # With nothing trusted, what is loaded need not be what was hashed: weights_only runs no
    # code whatever the bytes are, so torch reads the file itself (3x faster than from memory).
    source = file.stream() if file is not None else Path(path)
    try:
        with warnings.catch_warnings():  # "protocol 4 detected" and the like: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(source, weights_only=True, map_location="cpu")
    except Exception as e:  # a refusal (UnpicklingError) or damage (RuntimeError, EOFError, ...)
        file = file or ModelFile.read(path, role, "weights")
        imports = pickle_imports(file.data)
        if imports:
            shown = ", ".join(imports[:_SHOW]) + (", …" if len(imports) > _SHOW else "")
            raise UnsafeModelError(
                f"refusing to load {role} weights {file.path} (sha256 {file.sha256}): unpickling it "
                f"would import {shown}, which can run code",
                "save a state_dict (torch.save(model.state_dict(), path)) or convert it to "
                f".safetensors; {_how_to_trust(role, file.sha256)}",
            ) from None
        raise _unreadable(file.path, role, e) from None


def _unreadable(path: Path, role: str, e: BaseException) -> UsageError:
    return UsageError(f"loading {role} weights: {path} is not a readable PyTorch checkpoint "
                      f"(truncated, damaged or not a checkpoint: {_torch_reason(e)})",
                      "save it again with torch.save(model.state_dict(), path), or use .safetensors")


def _torch_reason(e: BaseException) -> str:
    """The cause in torch's message, without its advice to retry with weights_only=False."""
    advice = ("weights_only", "weights only", "trusted source", "file an issue", "check the documentation",
              "weightsunpickler error")
    for line in str(e).splitlines():
        line = line.strip()
        if line and not any(a in line.lower() for a in advice):
            return line
    return type(e).__name__


def pickle_imports(data: bytes) -> list[str]:
    """The imports unpickling these bytes would perform that weights_only does not allow,
    read statically (pickletools decodes opcodes, it never executes them).

    A torch.save zip archive goes through torch's own scanner; anything else is read as a
    sequence of pickles (the legacy torch.save format writes five in a row, and each may import),
    scanned until the bytes stop decoding as a pickle.
    """
    import torch

    allowed = _allowed_globals()
    stream = io.BytesIO(data)
    if zipfile.is_zipfile(stream):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
        except Exception:  # noqa: BLE001 -- not a torch.save layout: scan every pickle member
            found: set[str] = set()
            try:
                with zipfile.ZipFile(stream) as archive:
                    for name in archive.namelist():
                        if name.endswith(".pkl"):
                            found |= _imports_in_pickles(archive.read(name))
            except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError):
                pass  # a damaged archive: report what was found before the damage
            return sorted(found - allowed)
    return sorted(_imports_in_pickles(data) - allowed)


def _allowed_globals() -> set[str]:
    from torch import _weights_only_unpickler as wo

    return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())


def _imports_in_pickles(data: bytes) -> set[str]:
    """Every global the pickles at the start of `data`, one after another, would import."""
    found: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        try:
            _scan_one(stream, found)
        except Exception:  # noqa: BLE001 -- the bytes stop being a pickle: raw tensor data or damage
            break
    return found


def _scan_one(stream: io.BytesIO, found: set[str]) -> None:
    # STACK_GLOBAL takes module and name from the stack, so follow the strings pushed and
    # memoized; any other push stands on the stack as None (its value is never needed).
    pushed: list[object] = []
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):  # arg is "module name"
            found.add(_mapped(*str(arg).split(" ", 1)))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.add(_mapped(str(module), str(attr)) if isinstance(module, str) and isinstance(attr, str)
                      else "(an import whose name is computed while unpickling)")
            pushed.append(None)
        elif name in ("EXT1", "EXT2", "EXT4"):
            found.add(f"(copyreg extension {arg}: an import by registry code)")
            pushed.append(None)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.stack_after:
            pushed.append(arg if isinstance(arg, str) else None)


def _mapped(module: str, name: str = "") -> str:
    # Protocol-2 pickles name Python 2 modules (__builtin__); unpickling maps them, so must we.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}" if name else module


# ---------------------------------------------------------------- native engines


def refuse_engine(path: Path, role: str) -> None:
    """A TensorRT engine is refused whatever its hash: it is not a model edgedistill can train from."""
    raise UnsafeModelError(
        f"refusing {role} {path}: a TensorRT engine is native code, built for one GPU model and one "
        "TensorRT version, and is not loaded as a model",
        "give the ONNX model it was built from (a teacher can be an .onnx file); edgedistill builds "
        "and verifies the engine on the target itself (--backend tensorrt)",
    )


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""
