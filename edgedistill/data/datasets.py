"""Data sets behind a spec string, split once into train / validation / held-out test.

Three spec forms: "builtin:digits" (ships inside scikit-learn, so it works offline), a ".npz"
file with an array `x` (one input) or one array per input name (`input_ids`, `attention_mask`,
...), and an optional `y`, and "pkg.mod:factory" returning a torch Dataset of (inputs, y) pairs
or of inputs alone, inputs being an array or a dict name -> array. Label -1 marks an unlabelled
sample: it can only be distilled on (the teacher labels it), so it always lands in the training
split. Inputs keep their kind: floats become float32, integers (token ids, masks) int64.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from edgedistill.bench.model_inputs import NPZ_READ_ERRORS
from edgedistill.config import DataConfig
from edgedistill.data.inputs import SINGLE_NAME, Inputs, as_tensor, count, take
from edgedistill.errors import UsageError
from edgedistill.specs import call_entrypoint, is_entrypoint

DATA_SPEC_FORMS = (
    '"builtin:digits", a ".npz" file with arrays x (or one per input name) and y, '
    'or "pkg.mod:factory" returning a torch Dataset of (x, y) pairs'
)
MIN_PER_SPLIT = 10  # below this a split's accuracy moves in steps of 10 points: meaningless
UNLABELLED = -1
INT64_MAX = np.iinfo(np.int64).max  # integer inputs become int64: uint64 beyond it would wrap
DIGITS_SIZE = 32  # 8×8 digits upsampled so the models have room for three stages


@dataclass
class DataSplits:
    name: str  # "builtin:digits", the .npz file name, or the entrypoint
    # Inputs: one tensor, or a dict name -> tensor for a model with several (data/inputs.py).
    x_train: Inputs
    y_train: torch.Tensor | None  # None or -1 entries: unlabelled
    x_val: Inputs
    y_val: torch.Tensor
    x_test: Inputs  # held out: used only for the final accuracy
    y_test: torch.Tensor
    num_classes: int
    # per sample, e.g. (1, 32, 32); a dict name -> shape for named inputs
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]]
    fingerprint: str  # sha256 over the arrays and split settings, for caches

    @property
    def sample(self) -> Inputs:
        """Two training samples: what model checks run before any training (a batch of 2:
        BatchNorm in training mode refuses 1, and it catches a model fixed to a batch of 1)."""
        return take(self.x_train, slice(0, 2))


def load_data(cfg: DataConfig, seed: int) -> DataSplits:
    """Read the data the spec names and split it reproducibly (stratified, seeded)."""
    name, x, y = _read_source(cfg.spec)
    _validate(name, x, y)
    return _split(name, x, y, cfg, seed)


def calibration_subset(splits: DataSplits, n: int, seed: int) -> np.ndarray | dict[str, np.ndarray]:
    """`n` training samples (all, if fewer), for post-training quantization: one array, or one
    per input name (masks included, so calibration sees the padding the model will)."""
    if n < 1:
        raise UsageError(f"calibration needs at least 1 sample, asked for {n}")
    total = count(splits.x_train)
    picked = torch.from_numpy(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    chosen = take(splits.x_train, picked)
    if isinstance(chosen, dict):
        return {k: np.ascontiguousarray(v.numpy()) for k, v in chosen.items()}
    return np.ascontiguousarray(chosen.numpy())


# ---------------------------------------------------------------- reading


Arrays = Union[np.ndarray, dict[str, np.ndarray]]  # one input, or one array per input name


def _read_source(spec: str) -> tuple[str, Arrays, np.ndarray]:
    if spec.startswith("builtin:"):
        return spec, *_builtin(spec)
    if spec.lower().endswith(".npz"):
        return Path(spec).name, *_read_npz(Path(spec))
    if is_entrypoint(spec):
        return spec, *_read_entrypoint(spec)
    raise UsageError(f"data spec {spec!r} is not understood; expected {DATA_SPEC_FORMS}")


def _builtin(spec: str) -> tuple[np.ndarray, np.ndarray]:
    if spec != "builtin:digits":
        raise UsageError(f"unknown built-in data set {spec!r}; available: builtin:digits")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # N×1×8×8 in [0, 1]
    upsampled = torch.nn.functional.interpolate(
        images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False
    )
    return upsampled.numpy(), digits.target.astype(np.int64)


NPZ_HINT = ("save the arrays with numpy.savez(path, x=inputs, y=labels), or one array per input name "
            "(numpy.savez(path, input_ids=..., attention_mask=..., y=labels))")
# What a file that is not a zip archive usually is, by its first bytes.
_MAGIC = ((b"\x93NUMPY", "a single .npy array"), (b"\x80", "a Python pickle"), (b"PK", "a damaged zip archive"))


def _read_npz(path: Path) -> tuple[Arrays, np.ndarray]:
    if path.is_dir():
        raise UsageError(f"{path}: expected a .npz file with arrays x and y, found a directory", NPZ_HINT)
    if not path.exists():
        raise UsageError(f"data file not found: {path}")
    if not path.is_file():  # a FIFO would block the read forever
        raise UsageError(f"{path}: expected a .npz file with arrays x and y, found a device, pipe or socket")
    try:
        if not zipfile.is_zipfile(path):  # np.load would return a bare array, or try to unpickle
            with open(path, "rb") as f:
                head = f.read(8)
            found = next((what for magic, what in _MAGIC if head.startswith(magic)),
                         "a file that is not a zip archive")
            raise UsageError(f"{path.name}: expected a .npz archive of arrays x and y, found {found}", NPZ_HINT)
        # allow_pickle=False: an object array would be a pickle, i.e. code; refuse it.
        with np.load(path, allow_pickle=False) as archive:
            names = [n for n in archive.files if n != "y"]
            if not names:
                raise UsageError(f"{path.name}: expected an array x, or one array per input name, "
                                 f"found {archive.files or 'no arrays'}", NPZ_HINT)
            x = archive[SINGLE_NAME] if SINGLE_NAME in names else {n: archive[n] for n in names}
            first = x if not isinstance(x, dict) else next(iter(x.values()))
            y = archive["y"] if "y" in archive.files else np.full(first.shape[:1], UNLABELLED, dtype=np.int64)
            if SINGLE_NAME in names and len(names) > 1:
                raise UsageError(f"{path.name}: expected x alone (one input) or one array per input name, "
                                 f"found x beside {[n for n in names if n != SINGLE_NAME][:10]}", NPZ_HINT)
    except UsageError:
        raise
    except NPZ_READ_ERRORS as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__  # one line, one error
        raise UsageError(f"{path.name}: expected a readable .npz of numeric arrays, found {reason}", NPZ_HINT) from e
    return x, y


def _read_entrypoint(spec: str) -> tuple[Arrays, np.ndarray]:
    """Items are (inputs, y) pairs, or inputs alone (unlabelled); inputs an array or a dict."""
    dataset = call_entrypoint(spec, "data")
    try:
        items = [dataset[i] for i in range(len(dataset))]
    except TypeError as e:
        raise UsageError(f"data factory {spec!r} must return a map-style Dataset (len and [i]), {e}") from e
    if not items:
        raise UsageError(f"data factory {spec!r} returned an empty dataset")
    paired = isinstance(items[0], (tuple, list))
    bad = next((i for i, item in enumerate(items)
                if isinstance(item, (tuple, list)) != paired or (paired and len(item) != 2)), None)
    if bad is not None:
        found = f"a {len(items[bad])}-tuple" if isinstance(items[bad], (tuple, list)) else type(items[bad]).__name__
        raise UsageError(f"data factory {spec!r}: item {bad} should be "
                         f"{'an (x, y) pair like item 0' if paired else 'inputs alone like item 0'}, found {found}")
    inputs = [item[0] for item in items] if paired else items
    try:
        if isinstance(inputs[0], dict):
            names = list(inputs[0])
            if odd := next((i for i, d in enumerate(inputs) if not isinstance(d, dict) or list(d) != names), None):
                raise UsageError(f"data factory {spec!r}: item {odd}'s inputs should be named {names} like item 0's")
            x = {n: np.stack([np.asarray(d[n]) for d in inputs]) for n in names}
        else:
            x = np.stack([np.asarray(v) for v in inputs])
    except ValueError as e:
        raise UsageError(f"data factory {spec!r}: samples differ in shape ({e})") from e
    y = (np.asarray([np.asarray(item[1]) for item in items]) if paired
         else np.full(len(items), UNLABELLED, dtype=np.int64))
    return x, y


def _validate(name: str, x: Arrays, y: np.ndarray) -> None:
    if isinstance(x, dict):
        lengths = {k: len(v) if v.ndim else 0 for k, v in x.items()}
        if len(set(lengths.values())) > 1:
            raise UsageError(f"{name}: every input should have one row per sample, found "
                             + ", ".join(f"{k} {n}" for k, n in lengths.items()))
        for key, array in x.items():
            _validate_input(name, key, array, y)
        return
    _validate_input(name, SINGLE_NAME, x, y)


def _validate_input(name: str, key: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise UsageError(
            f"{name}: {key} should be a numeric array N×features…, found dtype {x.dtype}, shape {x.shape}"
        )
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise UsageError(
            f"{name}: y should be a 1-D integer array of class indices, "
            f"found dtype {y.dtype}, shape {y.shape}"
        )
    if len(x) != len(y):
        raise UsageError(
            f"{name}: {key} and y should have the same length, found {len(x)} samples and {len(y)} labels"
        )
    if (y < UNLABELLED).any():
        first = int(np.flatnonzero(y < UNLABELLED)[0])
        raise UsageError(
            f"{name}: labels should be class indices >= 0, or -1 for unlabelled; "
            f"found {int(y[first])} at index {first}"
        )
    # Per sample, so the message can point at the first bad one instead of "somewhere in x".
    bad = np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))  # ndim >= 2 by now
    if bad.size:
        raise UsageError(
            f"{name}: {key} should hold finite numbers, found NaN or Inf in {bad.size} sample(s), "
            f"the first at index {int(bad[0])}"
        )
    _check_range(name, key, x)


def _check_range(name: str, key: str, x: np.ndarray) -> None:
    """Refuse values the conversion to the model's dtype would change (data/inputs.as_tensor).

    Integers become int64 (exact: token ids keep their value); only uint64 beyond int64's range
    would wrap. float64 values beyond float32's finite range would become ±Inf and fail only at
    the first training step. Both name the first sample.
    """
    if not x.size:
        return
    if x.dtype == np.uint64:
        limit = INT64_MAX
        what = f"integer {key} must lie within int64's range (±{limit}), which it becomes"
        hint = "store token ids or codes as int64"
    elif x.dtype.kind == "f" and x.dtype.itemsize > 4:
        limit = float(np.finfo(np.float32).max)
        what = f"float {key} must lie within float32's finite range (±{limit:.4g}), which it becomes"
        hint = "rescale or normalise x (models usually expect values near [-1, 1])"
    else:
        return
    # Compared on both sides rather than with abs(): abs(int64 min) overflows.
    outside = (x > limit) | (x < -limit) if x.dtype.kind == "f" else x > limit
    bad = np.flatnonzero(outside.any(axis=tuple(range(1, x.ndim))))
    if bad.size:
        first = int(bad[0])
        value = x[first][outside[first]].flat[0]
        raise UsageError(
            f"{name}: {what}, found {value} in {bad.size} sample(s), the first at index {first}",
            hint,
        )


# ---------------------------------------------------------------- splitting


def _split(name: str, x: Arrays, y: np.ndarray, cfg: DataConfig, seed: int) -> DataSplits:
    labelled = np.flatnonzero(y != UNLABELLED)
    unlabelled = np.flatnonzero(y == UNLABELLED)
    n_test, n_val = round(len(labelled) * cfg.test_fraction), round(len(labelled) * cfg.val_fraction)
    n_train = len(labelled) - n_test - n_val + len(unlabelled)
    sizes = {"train": n_train, "validation": n_val, "test": n_test}
    if min(sizes.values()) < MIN_PER_SPLIT:
        raise UsageError(
            f"{name}: every split needs at least {MIN_PER_SPLIT} samples, found "
            + ", ".join(f"{k} {v}" for k, v in sizes.items())
            + f" from {len(labelled)} labelled and {len(unlabelled)} unlabelled samples",
            "provide more labelled data, or change data.val_fraction / data.test_fraction",
        )
    try:
        rest, test = train_test_split(labelled, test_size=n_test, stratify=y[labelled], random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=seed)
    except ValueError as e:  # e.g. a class with a single labelled sample cannot be stratified
        raise UsageError(f"{name}: cannot make a stratified split: {e}") from e
    y_train = np.concatenate([_keep_labels(y[train], cfg.label_fraction, seed), y[unlabelled]])
    rows = {"train": np.concatenate([train, unlabelled]), "val": val, "test": test}
    return _make_splits(name, x, y, rows, y_train, cfg, seed, num_classes=int(y[labelled].max()) + 1)


def _make_splits(name: str, x: Arrays, y: np.ndarray, rows: dict[str, np.ndarray], y_train: np.ndarray,
                 cfg: DataConfig, seed: int, *, num_classes: int) -> DataSplits:
    """The splits' tensors from the row indices of each split (inputs keep their kind)."""
    def inputs(idx: np.ndarray) -> Inputs:
        if isinstance(x, dict):
            return {k: as_tensor(v[idx]) for k, v in x.items()}
        return as_tensor(x[idx])

    tensors = {"x_train": inputs(rows["train"]), "x_val": inputs(rows["val"]), "x_test": inputs(rows["test"]),
               "y_train": torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
               "y_val": torch.from_numpy(np.ascontiguousarray(y[rows["val"]], dtype=np.int64)),
               "y_test": torch.from_numpy(np.ascontiguousarray(y[rows["test"]], dtype=np.int64))}
    settings = {"name": name, "seed": seed, **cfg.model_dump(mode="json")}
    shape = ({k: tuple(v.shape[1:]) for k, v in x.items()} if isinstance(x, dict) else tuple(x.shape[1:]))
    return DataSplits(name=name, num_classes=num_classes, input_shape=shape,
                      fingerprint=fingerprint(tensors, settings), **tensors)


def _keep_labels(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep `fraction` of the labels in every class, mark the rest unlabelled."""
    if fraction >= 1:
        return y
    kept = np.full_like(y, UNLABELLED)
    rng = np.random.default_rng(seed)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        chosen = rng.permutation(members)[: round(len(members) * fraction)]
        kept[chosen] = cls
    return kept


def fingerprint(tensors: dict[str, Inputs], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for key in sorted(tensors):
        named = tensors[key] if isinstance(tensors[key], dict) else {"": tensors[key]}
        for name in sorted(named):  # one input hashes as before: its key alone
            t = named[name]
            h.update(f"{key}{':' + name if name else ''}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()
