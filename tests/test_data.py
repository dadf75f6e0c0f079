"""Data specs, reproducible stratified splits, fingerprints, calibration subsets, bad input."""

from __future__ import annotations

import pathlib
import pickle
import textwrap

import numpy as np
import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data import calibration_subset, load_data
from edgedistill.errors import UsageError


def make_npz(path, n=300, classes=3, seed=0, with_y=True, **extra):
    """x[i, 0, 0, 0] == i, so every sample can be traced back to its row."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    x[:, 0, 0, 0] = np.arange(n)
    y = np.arange(n) % classes
    arrays = {"x": x, "y": y} if with_y else {"x": x}
    np.savez(path, **{**arrays, **extra})
    return path


def ids(x: torch.Tensor) -> set[int]:
    return set(x[:, 0, 0, 0].long().tolist())


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(), seed=0)


def test_digits_shapes_and_sizes(digits):
    assert digits.name == "builtin:digits"
    assert digits.input_shape == (1, 32, 32) and digits.num_classes == 10
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert (len(digits.x_val), len(digits.x_test)) == (180, 359)
    assert 0.0 <= float(digits.x_train.min()) and float(digits.x_train.max()) <= 1.0


def test_digits_splits_are_stratified(digits):
    for y, share in ((digits.y_val, 0.1), (digits.y_test, 0.2)):
        per_class = np.bincount(y.numpy(), minlength=10)
        expected = np.bincount(load_digits_targets(), minlength=10) * share
        assert np.all(np.abs(per_class - expected) <= 1.5), (per_class, expected)


def load_digits_targets():
    from sklearn.datasets import load_digits

    return load_digits().target


def test_splits_are_disjoint_and_complete(tmp_path):
    splits = load_data(DataConfig(spec=str(make_npz(tmp_path / "d.npz"))), seed=3)
    train, val, test = ids(splits.x_train), ids(splits.x_val), ids(splits.x_test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(300))
    # labels travel with their samples
    assert torch.equal(splits.y_val, splits.x_val[:, 0, 0, 0].long() % 3)


def test_same_seed_same_splits_and_fingerprint(tmp_path):
    cfg = DataConfig(spec=str(make_npz(tmp_path / "d.npz")))
    a, b = load_data(cfg, seed=1), load_data(cfg, seed=1)
    assert a.fingerprint == b.fingerprint and torch.equal(a.x_test, b.x_test)
    assert load_data(cfg, seed=2).fingerprint != a.fingerprint


def test_fingerprint_changes_with_data_and_settings(tmp_path):
    cfg = DataConfig(spec=str(make_npz(tmp_path / "d.npz")))
    base = load_data(cfg, seed=0).fingerprint
    make_npz(tmp_path / "d.npz", seed=1)  # same labels and sizes, other pixel values
    assert load_data(cfg, seed=0).fingerprint != base
    assert (
        load_data(cfg.model_copy(update={"label_fraction": 0.5}), seed=0).fingerprint
        != load_data(cfg, seed=0).fingerprint
    )


def test_label_fraction_keeps_a_stratified_share(tmp_path):
    cfg = DataConfig(spec=str(make_npz(tmp_path / "d.npz", n=600)), label_fraction=0.25)
    splits = load_data(cfg, seed=0)
    y = splits.y_train.numpy()
    kept = y[y >= 0]
    assert abs(len(kept) - 0.25 * len(y)) <= 3
    assert np.ptp(np.bincount(kept, minlength=3)) <= 1  # every class keeps the same share
    assert (splits.y_val >= 0).all() and (splits.y_test >= 0).all()


def test_unlabelled_samples_only_go_to_train(tmp_path):
    y = np.arange(300) % 3
    y[:100] = -1
    path = tmp_path / "d.npz"
    make_npz(path)
    x = np.load(path)["x"]
    np.savez(path, x=x, y=y)
    splits = load_data(DataConfig(spec=str(path)), seed=0)
    assert set(range(100)) <= ids(splits.x_train)
    assert int((splits.y_train == -1).sum()) == 100
    assert splits.num_classes == 3


def test_npz_without_y_has_no_labels_for_validation(tmp_path):
    path = make_npz(tmp_path / "d.npz", with_y=False)
    with pytest.raises(
        UsageError, match=r"at least 10 samples.*validation 0.*from 0 labelled and 300 unlabelled"
    ):
        load_data(DataConfig(spec=str(path)), seed=0)


def test_entrypoint_dataset(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(
        textwrap.dedent("""
        import torch
        class Pairs(torch.utils.data.Dataset):
            def __len__(self):
                return 120
            def __getitem__(self, i):
                return torch.full((2, 3), float(i)), i % 4
        def make():
            return Pairs()
        def not_pairs():  # pairs, then an item of inputs alone
            return [(torch.zeros(3), 1)] * 49 + [torch.zeros(3)]
        def named():  # a text model's inputs, unlabelled: ids stay integers
            return [{"input_ids": torch.arange(i, i + 5), "attention_mask": torch.ones(5, dtype=torch.long)}
                    for i in range(60)]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    splits = load_data(DataConfig(spec="my_data:make"), seed=0)
    assert splits.name == "my_data:make"
    assert splits.input_shape == (2, 3) and splits.num_classes == 4
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 120
    with pytest.raises(UsageError, match=r"item 49 should be an \(x, y\) pair like item 0, found Tensor"):
        load_data(DataConfig(spec="my_data:not_pairs"), seed=0)
    from edgedistill.data.datasets import _read_source

    _, x, y = _read_source("my_data:named")
    assert list(x) == ["input_ids", "attention_mask"] and (y == -1).all()
    assert x["input_ids"].shape == (60, 5) and x["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(x["input_ids"][7], np.arange(7, 12))


def test_calibration_subset(digits):
    a = calibration_subset(digits, 16, seed=0)
    assert a.dtype == np.float32 and a.shape == (16, 1, 32, 32)
    np.testing.assert_array_equal(a, calibration_subset(digits, 16, seed=0))
    train_rows = {row.tobytes() for row in digits.x_train.numpy()}
    assert all(row.tobytes() in train_rows for row in a)
    assert len(calibration_subset(digits, 10_000, seed=0)) == len(digits.x_train)
    with pytest.raises(UsageError):
        calibration_subset(digits, 0, seed=0)


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        load_data(DataConfig(spec=str(tmp_path / "nope.npz")), seed=0)


def test_npz_without_x(tmp_path):
    """RELIABILITY 8: a wrong array name: arrays other than x are named inputs, and a model whose
    forward does not take that name is refused with both lists (before any training); an archive
    with labels alone names what it expected."""
    from edgedistill.data.inputs import check_names
    from edgedistill.errors import ModelMismatchError
    from edgedistill.zoo import digits_student

    np.savez(tmp_path / "d.npz", images=np.zeros((100, 1, 32, 32), np.float32), y=np.arange(100) % 2)
    splits = load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)
    assert list(splits.x_train) == ["images"] and splits.input_shape == {"images": (1, 32, 32)}
    with pytest.raises(ModelMismatchError) as info:
        check_names(digits_student(), "student", splits.sample)
    assert "forward takes inputs ['input']" in info.value.message and "x for a model with one input" in info.value.hint
    assert "the data has ['images'], which it does not take" in info.value.message
    assert "the data lacks ['input']" in info.value.message
    np.savez(tmp_path / "y.npz", y=np.zeros(50, dtype=int))
    with pytest.raises(UsageError, match=r"expected an array x, or one array per input name, found \['y'\]"):
        load_data(DataConfig(spec=str(tmp_path / "y.npz")), seed=0)


def test_length_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 3)), y=np.zeros(90, dtype=int))
    with pytest.raises(UsageError, match="found 100 samples and 90 labels"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


def test_non_numeric_x(tmp_path):
    """RELIABILITY 8: a wrong dtype: expected a numeric array, found its dtype and shape."""
    np.savez(tmp_path / "d.npz", x=np.array([["a", "b"]] * 100), y=np.zeros(100, dtype=int))
    with pytest.raises(UsageError, match=r"x should be a numeric array.*found dtype <U1"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


class TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_object_arrays_are_not_unpickled(tmp_path):
    """RELIABILITY 8 (finding 8): an object array is refused by np.load(allow_pickle=False); the
    pickled payload, which would create a file, never runs."""
    marker = tmp_path / "code-ran"
    np.savez(tmp_path / "d.npz", x=np.array([TouchOnUnpickle(marker)] * 100), y=np.zeros(100, dtype=int))
    with pytest.raises(UsageError, match=r"readable \.npz.*allow_pickle=False"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)
    assert not marker.exists()


def test_float_labels_are_refused(tmp_path):
    """RELIABILITY 8: labels of the wrong dtype: expected 1-D integers, found dtype and shape."""
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 3)), y=np.zeros(100))
    with pytest.raises(UsageError, match="y should be a 1-D integer array.*float64"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


def test_too_few_samples(tmp_path):
    path = make_npz(tmp_path / "d.npz", n=40)
    with pytest.raises(UsageError, match=r"at least 10 samples, found train 28, validation 4, test 8"):
        load_data(DataConfig(spec=str(path)), seed=0)


@pytest.mark.parametrize("spec", ["digits", "data.csv", "./images/"])
def test_unknown_spec_names_the_accepted_forms(spec):
    with pytest.raises(UsageError) as info:
        load_data(DataConfig(spec=spec), seed=0)
    message = str(info.value)
    assert (
        spec in message
        and '"builtin:digits"' in message
        and ".npz" in message
        and "pkg.mod:factory" in message
    )


def test_unknown_builtin_and_missing_module():
    with pytest.raises(UsageError, match="available: builtin:digits"):
        load_data(DataConfig(spec="builtin:mnist"), seed=0)
    with pytest.raises(UsageError, match="cannot import module 'no_such_pkg.data'"):
        load_data(DataConfig(spec="no_such_pkg.data:make"), seed=0)


def test_reliability_8_wrong_shape_names_expected_and_found(tmp_path):
    """RELIABILITY 8: x without a feature axis: expected N×features…, found the shape."""
    np.savez(tmp_path / "d.npz", x=np.zeros(100, np.float32), y=np.zeros(100, dtype=int))
    with pytest.raises(UsageError, match=r"x should be a numeric array N×features…, found dtype float32, shape \(100,\)"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


@pytest.mark.parametrize("write, found", [
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((50, 3))) or p.with_suffix(".npy").rename(p),
     "found a single .npy array"),
    (lambda p: p.write_bytes(pickle.dumps({"x": [1, 2]})), "found a Python pickle"),
    (lambda p: p.write_text("x,y\n1,2\n"), "found a file that is not a zip archive"),
    (lambda p: p.mkdir(), "expected a .npz file with arrays x and y, found a directory"),
])
def test_reliability_8_file_that_is_not_an_npz(tmp_path, write, found):
    """RELIABILITY 8 (finding 8): a .npy, a pickle, a text file or a folder named .npz was an
    internal error (np.load returned a bare array) or "not found"; now exit 2 naming what it is,
    with how to save one."""
    path = tmp_path / "d.npz"
    write(path)
    with pytest.raises(UsageError) as info:
        load_data(DataConfig(spec=str(path)), seed=0)
    assert found in info.value.message and "d.npz" in info.value.message
    assert "numpy.savez" in info.value.hint and info.value.exit_code == 2


def test_reliability_8_pickle_named_npz_is_never_unpickled(tmp_path):
    """RELIABILITY 8: a pickle under a .npz name is told apart by its first bytes, not loaded."""
    marker = tmp_path / "code-ran"
    (tmp_path / "d.npz").write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
    with pytest.raises(UsageError, match="found a Python pickle"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95])
def test_reliability_8_truncated_npz(tmp_path, cut):
    """RELIABILITY 8 (finding 8): a truncated archive: exit 2 naming the file, not exit 3."""
    path = make_npz(tmp_path / "d.npz")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(UsageError, match=r"d\.npz: expected a (readable )?\.npz"):
        load_data(DataConfig(spec=str(path)), seed=0)


def test_reliability_8_calibration_shape_is_expected_vs_actual():
    """RELIABILITY 8: calibration data of the wrong shape or dtype names the model's input, the
    shape it expects and the one it got, with a hint (backends/common.check_calibration, which
    every quantizing backend calls)."""
    from edgedistill.backends.common import check_calibration

    with pytest.raises(UsageError) as info:
        check_calibration(np.zeros((8, 3, 28, 28), np.float32), [None, 1, 32, 32], "pixels", "onnxruntime")
    assert "input 'pixels': expected shape ['N', 1, 32, 32], got [8, 3, 28, 28]" in info.value.message
    assert "input shape" in info.value.hint
    with pytest.raises(UsageError, match="expected float32, got int64"):
        check_calibration(np.zeros((8, 1, 32, 32), np.int64), [None, 1, 32, 32], "pixels", "onnxruntime")


def test_reliability_8_pipe_named_npz_is_refused_without_reading(tmp_path):
    """RELIABILITY 8: a FIFO under a .npz name would block the read forever: refused unread."""
    import os

    os.mkfifo(tmp_path / "d.npz")
    with pytest.raises(UsageError, match="found a device, pipe or socket"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)
