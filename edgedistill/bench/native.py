"""The native ExecuTorch runner: built on first use, cached, and driven like the Python probe.

ExecuTorch's Python runtime imports torch (6-8 s here), which no phone pays: its cold start says
nothing about a device's. The runner in `edgedistill/probe/native/` is a small C++ program on
ExecuTorch's own C++ API that speaks the probe's protocol (same modes, same JSON result, same
partial files on a kill). This module

- builds it with the machine's C++ compiler against the headers and libraries inside the
  executorch wheel (`executorch/include`, `executorch/lib`; no CMake needed, no libtorch), into
  `$XDG_CACHE_HOME/edgedistill/native/<key>/`, where the key hashes the source, the executorch
  version and folder, and the compiler. A build goes to a temporary folder renamed into place
  under a lock file, so a concurrent or interrupted build never leaves a half binary; a cached
  binary whose sha256 no longer matches its manifest is rebuilt;
- turns a probe request into the runner's command line, with the inputs file (an .npz keyed by
  input name, or a .npy for one input) converted to raw files and a small spec the C++ reads;
- says which runner measures a target's ExecuTorch artifacts (`executorch_runtime`), and why the
  Python runtime measures instead when no compiler is found or the build fails: the results
  (`runner.fallback_reason`) and the terminal say so.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[1] / "probe" / "native"
SOURCE = SOURCE_DIR / "executorch_runner.cpp"
BINARY_NAME = "executorch_runner"
BUILD_TIMEOUT_S = 300.0

# numpy dtype name -> ExecuTorch ScalarType code (runtime/core/portable_type/scalar_type.h).
SCALAR_TYPES = {"uint8": 0, "int8": 1, "int16": 2, "int32": 3, "int64": 4, "float16": 5,
                "float32": 6, "float64": 7, "bool": 11}
_PTE_INPUT = re.compile(r"input_(\d+)")


class BuildFailed(Exception):
    """The runner cannot be built here; the message is the reason the results record."""


@dataclass(frozen=True)
class NativeBuild:
    binary: Path
    record: dict  # what results say about the runner (`runner`)
    reused: bool  # True when the cache answered (no compile)


def executorch_folder() -> Path:
    """The installed executorch package's folder, found without importing it (that imports torch)."""
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise BuildFailed("the executorch package is not installed (pip install 'edgedistill[executorch]')")
    return Path(next(iter(spec.submodule_search_locations)))


def find_compiler(env: dict[str, str] | None = None) -> str:
    """The C++ compiler: $CXX when set (it must exist), else c++, g++ or clang++ on PATH."""
    env = os.environ if env is None else env
    path = env.get("PATH", os.defpath)
    if env.get("CXX"):
        found = shutil.which(env["CXX"], path=path)
        if not found:
            raise BuildFailed(f"CXX={env['CXX']!r} is not an executable compiler")
        return found
    for name in ("c++", "g++", "clang++"):
        if found := shutil.which(name, path=path):
            return found
    raise BuildFailed("no C++ compiler found (set CXX, or install g++ or clang++)")


def _compiler_identity(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildFailed(f"the C++ compiler {cxx} does not run: {e}") from e
    first = (out.stdout or out.stderr).strip().splitlines()
    if out.returncode != 0 or not first:
        raise BuildFailed(f"the C++ compiler {cxx} does not run (`--version` exited {out.returncode})")
    return first[0]


def compile_command(cxx: str, et: Path, version: str, output: Path) -> list[str]:
    """The compiler's command line: FIELD-NOTES' measured recipe, what the wheel's CMake
    config sets for a consumer on CMake < 3.28 (EXECUTORCH_COMPILE_DEFINITIONS, _INCLUDE_DIRS)."""
    lib = et / "lib"
    registering = [f"-lexecutorch_{name}" for name in
                   ("backend_xnnpack", "kernels_optimized", "kernels_quantized", "threadpool")
                   if (lib / f"libexecutorch_{name}.so").exists()]
    return [
        cxx, "-std=c++17", "-O2", "-Wno-deprecated-declarations",
        # The vendored c10 headers otherwise want a header generated inside a PyTorch build;
        # the libraries are built with the tracer switch (it changes class layouts) and the pool.
        "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_EVENT_TRACER_ENABLED", "-DET_USE_THREADPOOL",
        f"-DEDGEDISTILL_EXECUTORCH_VERSION=\"{version}\"",
        f"-I{et / 'include'}", f"-I{et / 'include/executorch/runtime/core/portable_type/c10'}",
        str(SOURCE), "-o", str(output),
        f"-L{lib}", f"-Wl,-rpath,{lib}", "-lexecutorch",
        # Delegates and kernels register in static initializers nothing references: with
        # --as-needed the linker drops them ("Backend XnnpackBackend is not registered").
        "-Wl,--push-state,--no-as-needed", *registering, "-Wl,--pop-state",
    ]


def cache_root(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "edgedistill" / "native"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached(folder: Path) -> NativeBuild | None:
    """The build in `folder` if it is whole: a manifest, and a binary with the sha256 it records."""
    try:
        record = json.loads((folder / "manifest.json").read_text())
        binary = folder / BINARY_NAME
        if record.get("binary_sha256") == _sha256(binary) and os.access(binary, os.X_OK):
            return NativeBuild(binary, record, reused=True)
    except (OSError, ValueError, AttributeError):
        pass
    return None


def build(env: dict[str, str] | None = None) -> NativeBuild:
    """The runner for this machine's executorch and compiler: from the cache, else compiled now.

    Raises BuildFailed with the reason when it cannot be built."""
    env = dict(os.environ if env is None else env)
    et = executorch_folder()
    try:
        version = metadata.version("executorch")
    except metadata.PackageNotFoundError as e:
        raise BuildFailed("executorch has no package metadata (its version is unknown)") from e
    if not (et / "include" / "executorch").is_dir() or not (et / "lib" / "libexecutorch.so").exists():
        raise BuildFailed(f"this executorch ({version}) ships no C++ headers and libraries in {et}")
    cxx = find_compiler(env)
    compiler = _compiler_identity(cxx)
    source_sha = _sha256(SOURCE)
    flags = [a for a in compile_command("", et, version, Path()) if a != str(SOURCE)]  # not where the source lies
    key_text = json.dumps([source_sha, version, str(et), cxx, compiler, flags])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    root = cache_root(env)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "w")  # noqa: SIM115 -- held for the whole build below
    except OSError as e:
        raise BuildFailed(f"cannot write the runner's cache {root}: {e}") from e
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same key waits, then reuses
        return _build_locked(root, key, cxx, compiler, et, version, source_sha, env)


def _build_locked(root: Path, key: str, cxx: str, compiler: str, et: Path, version: str, source_sha: str,
                  env: dict[str, str]) -> NativeBuild:
    final = root / key
    if (done := _cached(final)) is not None:
        return done
    for stale in root.glob(f".{key}-*"):  # a build killed before its rename (the lock is ours now)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError as e:
        raise BuildFailed(f"cannot write the runner's cache {root}: {e}") from e
    try:
        binary = tmp / BINARY_NAME
        began = time.monotonic()
        try:
            out = subprocess.run(compile_command(cxx, et, version, binary), capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT_S, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BuildFailed(f"compiling the native runner with {cxx} failed: {e}") from e
        if out.returncode != 0 or not binary.exists():
            errors = [line for line in out.stderr.splitlines() if "error" in line] or out.stderr.splitlines()
            raise BuildFailed(f"compiling the native runner with {cxx} failed (exit {out.returncode}): "
                              f"{(errors or ['no output'])[0].strip()}")
        record = {"kind": "native", "binary_sha256": _sha256(binary), "executorch_version": version,
                  "source_sha256": source_sha, "compiler": f"{cxx} ({compiler})",
                  "build_s": round(time.monotonic() - began, 2)}
        (tmp / "manifest.json").write_text(json.dumps(record, indent=1))
        if final.exists():  # a damaged earlier build (its sha256 did not match): replaced whole
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return NativeBuild(final / BINARY_NAME, record, reused=False)


# ---------------------------------------------------------------- requests


def _ordered_inputs(path: Path) -> list[tuple[str, object]]:
    """The inputs file's arrays in the program's order: a .npy is input_0; an .npz keyed
    input_0, input_1, ... (a .pte keeps no names) goes by index, other keys in file order (the
    runner then reports what the program expected against what it was given)."""
    import numpy as np

    if path.suffix == ".npy":
        return [("input_0", np.load(path, mmap_mode="r", allow_pickle=False))]
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if names and all(_PTE_INPUT.fullmatch(n) for n in names):
            names.sort(key=lambda n: int(n.split("_")[1]))
        return [(n, archive[n]) for n in names]


def write_inputs(inputs: Path, folder: Path) -> Path:
    """Raw files and the spec the runner reads: name, scalar type, itemsize, shape, file."""
    import numpy as np

    lines = []
    for i, (name, array) in enumerate(_ordered_inputs(Path(inputs))):
        array = np.ascontiguousarray(array)
        raw = folder / f"input-{i}.raw"
        array.tofile(raw)
        code = SCALAR_TYPES.get(array.dtype.name, -1)
        lines.append("\t".join([name.replace("\t", " "), str(code), str(array.itemsize),
                                ",".join(map(str, array.shape)), raw.name]))  # beside the spec
    spec = folder / "inputs.tsv"
    spec.write_text("\n".join(lines) + "\n")
    return spec


class NativeCommand:
    """run_probe's command for the native runner: same request, same result file."""

    def __init__(self, native: NativeBuild):
        self.native = native

    def prepare(self, request: dict, folder: Path) -> dict:
        from edgedistill.bench.runners.local import ProbeSetupError

        if request.get("inputs"):
            try:
                spec = write_inputs(Path(request["inputs"]), folder)
            except (OSError, ValueError, EOFError) as e:  # what np.load raises on a missing or bad file
                raise ProbeSetupError(type(e).__name__, f"inputs {request['inputs']}: {e}") from e
            request = {**request, "native_inputs_spec": str(spec)}
        return request

    def argv(self, request: dict, request_path: Path) -> list[str]:
        flag = {"warmup_iterations": "--warmup-iterations", "min_iterations": "--min-iterations",
                "min_duration_s": "--min-duration-s", "max_duration_s": "--max-duration-s",
                "threads": "--threads", "batch_size": "--batch-size", "device": "--device",
                "outputs_path": "--outputs-path", "result_path": "--result-path",
                "parent_start_wall_ns": "--parent-start-wall-ns", "native_inputs_spec": "--inputs"}
        argv = [str(self.native.binary), "--model", request["model"], "--mode", request["mode"]]
        for key, name in flag.items():
            if request.get(key) is not None:
                argv += [name, str(request[key])]
        argv += ["--same-input", "1" if request.get("same_input") else "0"]
        for key, value in (request.get("options") or {}).items():
            argv += ["--option", f"{key}={value}"]
        if request.get("cache"):  # the harness asks only backends with a cache; refuse like the probe
            argv += ["--option", "cache=" + json.dumps(request["cache"])]
        return argv


def probe_command(backend: str, executorch_runtime: str,
                  note: Callable[[str], None] = lambda s: None) -> tuple[NativeCommand | None, dict]:
    """Which program measures an artifact of `backend`, and the `runner` record results keep.

    None means the Python probe. For ExecuTorch with executorch_runtime "native", the native
    runner unless it cannot be built here; then the reason is recorded and passed to `note`."""
    if backend != "executorch" or executorch_runtime == "python":
        return None, {"kind": "python"}
    try:
        native = build()
    except (BuildFailed, OSError) as e:  # OSError: the cache could not be written (disk full, read-only)
        reason = str(e)
        note(f"native ExecuTorch runner unavailable ({reason}); measuring with the Python runtime, "
             "whose cold start includes importing torch")
        return None, {"kind": "python", "fallback_reason": reason}
    if not native.reused:
        note(f"built the native ExecuTorch runner in {native.record['build_s']:g} s ({native.binary})")
    return NativeCommand(native), dict(native.record)


def main(argv: list[str]) -> int:
    """`python -m edgedistill.bench.native`: build (or find) the runner and print its record."""
    try:
        native = build()
    except BuildFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"binary": str(native.binary), "reused": native.reused, **native.record}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
