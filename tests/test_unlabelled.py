"""Issue 12 item 3: data without labels is split at random and distilled on the teacher alone.

Splits: reproducible by seed, every row exactly once, each split row traceable to the user's row;
a mix of labelled and unlabelled rows keeps the stratified split of the labelled ones. Distill:
an .npz with x only trains for both objectives, validated against the teacher.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data import load_data
from edgedistill.errors import UsageError


def write_npz(path, n=200, labels=None, seed=0):
    """x[i, 0] == i, so a split row can be traced back to the row it came from."""
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    x[:, 0] = np.arange(n)
    np.savez(path, **({"x": x} if labels is None else {"x": x, "y": labels}))
    return path


def rows(x: torch.Tensor) -> list[int]:
    return x[:, 0].long().tolist()


# ---------------------------------------------------------------- splits


def test_unlabelled_split_is_seeded_and_covers_every_row_once(tmp_path):
    cfg = DataConfig(spec=str(write_npz(tmp_path / "u.npz")))
    a, b, other = load_data(cfg, seed=5), load_data(cfg, seed=5), load_data(cfg, seed=6)
    for name in ("train_index", "val_index", "test_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.fingerprint == b.fingerprint
    assert not np.array_equal(a.test_index, other.test_index) and a.fingerprint != other.fingerprint
    every = np.concatenate([a.train_index, a.val_index, a.test_index])
    assert sorted(every.tolist()) == list(range(200))  # each row exactly once
    assert (len(a.val_index), len(a.test_index)) == (20, 40)
    assert rows(a.x_train) == a.train_index.tolist() and rows(a.x_test) == a.test_index.tolist()


def test_mixed_data_keeps_the_stratified_labelled_split(tmp_path):
    y = np.arange(200) % 4
    y[::2] = -1  # rows 0, 2, 4, ...: unlabelled; the labelled ones are classes 1 and 3
    splits = load_data(DataConfig(spec=str(write_npz(tmp_path / "m.npz", labels=y))), seed=0)
    assert splits.labelled and splits.num_classes == 4
    # val and test hold labelled rows only, both classes in equal shares (stratified)
    for index, part in ((splits.val_index, splits.y_val), (splits.test_index, splits.y_test)):
        assert (y[index] >= 0).all() and torch.equal(part, torch.from_numpy(y[index]))
        counts = np.bincount(part.numpy(), minlength=4)
        assert counts[1] == counts[3] and counts[0] == counts[2] == 0
    assert (len(splits.val_index), len(splits.test_index)) == (10, 20)  # fractions of the 100 labelled
    unlabelled_rows = set(np.flatnonzero(y == -1).tolist())
    assert unlabelled_rows <= set(splits.train_index.tolist())
    assert rows(splits.x_train) == splits.train_index.tolist()
    assert torch.equal(splits.y_train, torch.from_numpy(y[splits.train_index]))


def test_too_few_unlabelled_rows_name_the_sizes(tmp_path):
    with pytest.raises(UsageError, match=r"at least 10 samples.*validation 4.*from 0 labelled and 40 unlabelled"):
        load_data(DataConfig(spec=str(write_npz(tmp_path / "s.npz", n=40))), seed=0)
