"""Data specs, reproducible stratified splits, fingerprints, calibration subsets, bad input."""

from __future__ import annotations

import pathlib
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
        def not_pairs():
            return [torch.zeros(3)] * 50
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    splits = load_data(DataConfig(spec="my_data:make"), seed=0)
    assert splits.name == "my_data:make"
    assert splits.input_shape == (2, 3) and splits.num_classes == 4
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 120
    with pytest.raises(UsageError, match=r"item 0 should be an \(x, y\) pair"):
        load_data(DataConfig(spec="my_data:not_pairs"), seed=0)


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
    np.savez(tmp_path / "d.npz", images=np.zeros((50, 3)), y=np.zeros(50, dtype=int))
    with pytest.raises(UsageError, match=r"expected an array named 'x', found \['images', 'y'\]"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


def test_length_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 3)), y=np.zeros(90, dtype=int))
    with pytest.raises(UsageError, match="found 100 samples and 90 labels"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)


def test_non_numeric_x(tmp_path):
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
    marker = tmp_path / "code-ran"
    np.savez(tmp_path / "d.npz", x=np.array([TouchOnUnpickle(marker)] * 100), y=np.zeros(100, dtype=int))
    with pytest.raises(UsageError, match=r"readable \.npz.*allow_pickle=False"):
        load_data(DataConfig(spec=str(tmp_path / "d.npz")), seed=0)
    assert not marker.exists()


def test_float_labels_are_refused(tmp_path):
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
