"""A model's inputs against the arrays it will be fed: read them, check them, or draw them.

The probe is fed an .npz with one array per model input, keyed by the input's name, samples
along axis 0 (batch b of sample k is arr[k:k+b] for every input alike); a .npy is a one-input
model's only input. This module checks such arrays against what the runtime says the model takes
(`harness.describe_model`'s `inputs`: {"name", "shape": [int | None], "dtype"}) BEFORE any timing,
so a wrong shape, dtype or name is a table of expected against found, not a runtime's traceback
in the middle of a benchmark; and, without data, draws seeded inputs at the declared shapes.

numpy only: no runtime is imported here (the parent never imports one).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgedistill.errors import UsageError

SAMPLES_AXIS = "N"  # how the samples axis (axis 0) is shown in tables
# What numpy raises reading a damaged .npz: zipfile, zlib and numpy's header parser each fail in
# their own way; MemoryError: a header that declares an array far larger than the file. Every
# reader of user .npz files catches all of them, so a damaged file is a usage error, not exit 3.
NPZ_READ_ERRORS = (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, MemoryError,
                   zipfile.BadZipFile, zlib.error)


# ---------------------------------------------------------------- reading


def read_arrays(path: Path | str) -> dict[str, np.ndarray]:
    """{key: array} from an .npz (every array, pickles refused) or a .npy (one array, key "x")."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise UsageError(f"input data {path}: expected an .npz (one array per input name) or a .npy, "
                         f"found a {suffix or 'file without extension'}",
                         "save with numpy.savez(path, input_name=array, ...)")
    if not path.is_file():
        raise UsageError(f"input data {path}: expected a file, found {'a folder' if path.exists() else 'nothing'}")
    if path.stat().st_size == 0:
        raise UsageError(f"input data {path}: the file is empty", "save it again with numpy.savez")
    try:
        # allow_pickle=False: an object array is a pickle, code that runs when loaded.
        loaded = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as e:
        raise UsageError(f"input data {path}: not a readable {suffix} file ({_first_line(e)})",
                         "save it with numpy.savez (or numpy.save for one array)") from None
    if isinstance(loaded, np.ndarray):
        if suffix == ".npz":
            raise UsageError(f"input data {path}: expected an .npz archive, found a .npy array named .npz",
                             "rename it to .npy, or save it with numpy.savez(path, input_name=array)")
        return {"x": loaded}
    with loaded:
        if suffix == ".npy":
            raise UsageError(f"input data {path}: expected a .npy array, found an .npz archive named .npy",
                             "rename it to .npz")
        arrays = {}
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as e:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise UsageError(f"input data {path}: array {key!r} holds Python objects (a pickle), "
                                 f"which edgedistill does not load ({_first_line(e)})",
                                 "save numeric arrays only (int64 token ids, float32 features, ...)") from None
            except NPZ_READ_ERRORS as e:
                raise UsageError(f"input data {path}: array {key!r} cannot be read ({_first_line(e)})") from None
    if not arrays:
        raise UsageError(f"input data {path}: expected one array per model input, found an empty archive")
    return arrays


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class Mismatch:
    """One way the arrays do not fit the model. `kind`: missing, unexpected, rank, dim, dtype,
    samples or shape (a --shape that does not fit the model)."""

    input: str
    kind: str
    expected: str
    found: str


def _shown(shape: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _per_sample(shape: list[int | None] | tuple[int, ...]) -> str:
    """A shape with its samples axis shown as N: what an array for that input looks like."""
    return "[" + ", ".join([SAMPLES_AXIS, *("?" if d is None else str(d) for d in shape[1:])]) + "]"


def _declared(spec: dict, shapes: dict | None) -> tuple[list[int | None], Mismatch | None]:
    """The input's shape with dynamic dims filled from `shapes`, and a Mismatch if they clash."""
    declared = list(spec["shape"])
    given = (shapes or {}).get(spec["name"])
    if given is None:
        return declared, None
    given = [int(d) for d in given]
    clash = len(given) != len(declared) or any(d is not None and d != g for d, g in zip(declared, given))
    if clash:
        return declared, Mismatch(spec["name"], "shape", f"--shape of the model's {_shown(declared)}",
                                  f"--shape {'x'.join(map(str, given))}")
    return given, None


def match(model_inputs: list[dict], arrays: dict[str, np.ndarray], shapes: dict | None = None) -> list[Mismatch]:
    """Every way `arrays` (samples along axis 0) do not fit `model_inputs`; empty when they do.

    Names missing or unexpected; per input: rank, each static dimension after the samples axis
    (and those `shapes` fixes), dtype; sample counts that differ between inputs. One array for a
    one-input model is that input whatever its key (the pipeline writes "x")."""
    names = [spec["name"] for spec in model_inputs]
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    found: list[Mismatch] = []
    for name in sorted(set(shapes or {}) - set(names)):
        found.append(Mismatch(name, "unexpected", f"one of the model's inputs {names}", "a --shape for it"))
    for name in arrays:
        if name not in names:
            found.append(Mismatch(name, "unexpected", f"one of the model's inputs {names}",
                                  f"an array {list(arrays[name].shape)} {arrays[name].dtype}"))
    counts: dict[str, int] = {}
    for spec in model_inputs:
        name = spec["name"]
        shape, clash = _declared(spec, shapes)
        if clash:
            found.append(clash)
        if name not in arrays:
            found.append(Mismatch(name, "missing", f"an array {_per_sample(shape) if shape else '[]'} "
                                  f"{spec['dtype']}", "nothing"))
            continue
        arr = arrays[name]
        if arr.ndim == 0 or arr.ndim != len(shape):
            found.append(Mismatch(name, "rank", f"{len(shape)} dimensions, samples first: "
                                  f"{_per_sample(shape) if shape else '[]'}",
                                  f"{arr.ndim}: {list(arr.shape)}"))
        else:
            for axis in range(1, len(shape)):  # axis 0 holds the samples, sliced into batches
                if shape[axis] is not None and shape[axis] != arr.shape[axis]:
                    source = ("--shape " + "x".join(map(str, shape)) if name in (shapes or {})
                              else f"shape {_shown(shape)}")
                    found.append(Mismatch(name, "dim", f"dimension {axis} = {shape[axis]} ({source})",
                                          f"{arr.shape[axis]} (array {_per_sample(arr.shape)})"))
        if np.dtype(arr.dtype).name != str(spec["dtype"]):
            found.append(Mismatch(name, "dtype", str(spec["dtype"]), np.dtype(arr.dtype).name))
        if arr.ndim:
            counts[name] = int(arr.shape[0])
    if counts:
        first, n = next(iter(counts.items()))
        for name, count in counts.items():
            if count == 0:
                found.append(Mismatch(name, "samples", "at least 1 sample along axis 0", "0"))
            elif count != n:
                found.append(Mismatch(name, "samples", f"{n} samples along axis 0 (as {first!r})",
                                      f"{count} samples"))
    return found


def mismatch_table(mismatches: list[Mismatch]) -> str:
    """A plain table of expected against found, one row per mismatch, and a hint line."""
    rows = [("input", "expected", "found")] + [(m.input, m.expected, m.found) for m in mismatches]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    kinds = {m.kind for m in mismatches}
    hints = []
    if kinds & {"missing", "unexpected"}:
        hints.append("key each array by the model's input name (numpy.savez(path, input_ids=..., ...))")
    if kinds & {"rank", "dim", "samples"}:
        hints.append("put samples along axis 0 of every array, the rest as the model declares")
    if "dtype" in kinds:
        hints.append("cast each array to the dtype shown (token ids are usually int64)")
    if "shape" in kinds:
        hints.append("--shape may only fix the model's dynamic (?) dimensions")
    return "\n".join(lines + ["hint: " + "; ".join(hints)] if hints else lines)


# ---------------------------------------------------------------- drawing


class Synthetic(NamedTuple):
    """Seeded inputs, and what was drawn (for the terminal and the results file)."""

    arrays: dict[str, np.ndarray]
    description: dict[str, Any]


def synthesize(model_inputs: list[dict], shapes: dict | None, n: int, seed: int,
               int_range: tuple[int, int] = (0, 100)) -> Synthetic:
    """`n` samples of every input, drawn from numpy's default_rng(seed), at each input's declared
    shape (axis 0 holds the samples; other dynamic dims come from `shapes`) and dtype: floats
    standard normal, integers uniform in [low, high) of `int_range` (within the dtype's own range),
    bools fair coin flips. The same seed gives the same arrays."""
    if n < 1:
        raise UsageError(f"synthetic inputs: expected at least 1 sample, got {n}")
    low, high = (int(v) for v in int_range)
    if low >= high:
        raise UsageError(f"synthetic inputs: integer range [{low}, {high}) is empty", "give low < high")
    names = [spec["name"] for spec in model_inputs]
    unknown = sorted(set(shapes or {}) - set(names))
    if unknown:
        raise UsageError(f"--shape names {unknown}, which the model does not have; its inputs are {names}")
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    drawn: dict[str, str] = {}
    for spec in model_inputs:
        name = spec["name"]
        declared, clash = _declared(spec, shapes)
        if clash:
            raise UsageError(f"input {name!r}: {clash.found} does not fit the model's shape "
                             f"{_shown(spec['shape'])}", "--shape may only fix the model's dynamic (?) dimensions")
        if not declared:
            raise UsageError(f"input {name!r} is a scalar; inputs need a samples axis", "pass --data")
        open_dims = [i for i, d in enumerate(declared) if d is None and i > 0]
        if open_dims:
            example = "x".join("1" if i == 0 else str(d or 128) for i, d in enumerate(declared))
            raise UsageError(f"input {name!r} has a dynamic dimension {open_dims[0]} (shape {_shown(declared)}) "
                             "and no --shape for it", f"pass --shape {name}={example} (your sizes)")
        shape = (n, *declared[1:])
        arrays[name], drawn[name] = _draw(rng, spec, shape, low, high)
    what = "; ".join(f"{k} {v}" for k, v in drawn.items())
    description = {"kind": "synthetic", "generator": "numpy.random.default_rng", "seed": seed, "samples": n,
                   "int_range": [low, high], "inputs": drawn,
                   "summary": f"{n} seeded random samples (seed {seed}): {what}"}
    return Synthetic(arrays, description)


def _draw(rng: np.random.Generator, spec: dict, shape: tuple[int, ...], low: int, high: int
          ) -> tuple[np.ndarray, str]:
    try:
        dtype = np.dtype(spec["dtype"])
    except TypeError:
        raise UsageError(f"input {spec['name']!r}: cannot draw values of type {spec['dtype']!r}",
                         "pass --data with that input") from None
    shown = f"{dtype.name} {list(shape)}"
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_), f"{shown} random booleans"
    if np.issubdtype(dtype, np.integer):
        bounds = np.iinfo(dtype)
        lo, hi = max(low, int(bounds.min)), min(high, int(bounds.max) + 1)
        if lo >= hi:
            raise UsageError(f"input {spec['name']!r}: integer range [{low}, {high}) holds no {dtype.name} value")
        return rng.integers(lo, hi, size=shape, dtype=np.int64).astype(dtype), f"{shown} uniform integers in [{lo}, {hi})"
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=shape).astype(dtype), f"{shown} standard normal"
    raise UsageError(f"input {spec['name']!r}: cannot draw values of type {dtype.name}", "pass --data with that input")
