"""model_inputs: reading input arrays, checking them against a model's inputs, drawing them."""

import numpy as np
import pytest

from edgedistill.bench import model_inputs as mi
from edgedistill.errors import EXIT_USAGE, UsageError

TEXT = [{"name": "input_ids", "shape": [None, None], "dtype": "int64"},
        {"name": "attention_mask", "shape": [None, None], "dtype": "int64"}]
IMAGE = [{"name": "pixels", "shape": [None, 3, 8, 8], "dtype": "float32"}]
MIXED = [{"name": "features", "shape": [None, 4], "dtype": "float32"},
         {"name": "ids", "shape": [1, 2], "dtype": "int32"},
         {"name": "flags", "shape": [None, 2], "dtype": "bool"}]


def _text(n=5, seq=7, dtype=np.int64):
    return {"input_ids": np.zeros((n, seq), dtype), "attention_mask": np.ones((n, seq), dtype)}


# ---------------------------------------------------------------- read_arrays


def test_read_arrays_reads_npz_by_key_and_npy_as_x(tmp_path):
    np.savez(tmp_path / "d.npz", **_text())
    arrays = mi.read_arrays(tmp_path / "d.npz")
    assert list(arrays) == ["input_ids", "attention_mask"] and arrays["input_ids"].shape == (5, 7)
    np.save(tmp_path / "one.npy", np.arange(6.0).reshape(3, 2))
    assert list(mi.read_arrays(tmp_path / "one.npy")) == ["x"]


def _usage(path, match):
    with pytest.raises(UsageError, match=match) as e:
        mi.read_arrays(path)
    assert e.value.exit_code == EXIT_USAGE and "\n" not in e.value.message
    return e.value


def test_read_arrays_refuses_bad_files_with_one_line_usage_errors(tmp_path):
    _usage(tmp_path / "absent.npz", "expected a file, found nothing")
    (tmp_path / "empty.npz").write_bytes(b"")
    _usage(tmp_path / "empty.npz", "the file is empty")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    err = _usage(tmp_path / "array.npz", "found a .npy array named .npz")
    assert "rename it to .npy" in err.hint
    np.savez(tmp_path / "archive.npz", x=np.zeros(3))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    _usage(tmp_path / "archive.npy", "found an .npz archive named .npy")
    (tmp_path / "d.csv").write_text("1,2\n")
    _usage(tmp_path / "d.csv", r"expected an .npz .* found a .csv")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _usage(tmp_path / "junk.npz", "not a readable .npz file")
    np.savez(tmp_path / "none.npz")
    _usage(tmp_path / "none.npz", "found an empty archive")


def test_read_arrays_refuses_a_pickle_bearing_npz_without_running_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))  # would create a file if unpickled

    objects = np.empty(1, dtype=object)
    objects[0] = Boom()
    np.savez(tmp_path / "evil.npz", input_ids=np.zeros((2, 3), np.int64), extra=objects)
    assert str(tmp_path / "ran").encode() in (tmp_path / "evil.npz").read_bytes()  # the pickle is in the file
    _usage(tmp_path / "evil.npz", "array 'extra' holds Python objects")
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- match


def _kinds(mismatches):
    return sorted((m.input, m.kind) for m in mismatches)


def test_matching_arrays_have_no_mismatch():
    assert mi.match(TEXT, _text()) == []
    assert mi.match(IMAGE, {"x": np.zeros((4, 3, 8, 8), np.float32)}) == []  # one input: any key
    arrays = {"features": np.zeros((3, 4), np.float32), "ids": np.zeros((3, 2), np.int32),
              "flags": np.zeros((3, 2), bool)}
    assert mi.match(MIXED, arrays) == []  # a fixed batch of 1 still takes samples along axis 0


def test_each_mismatch_kind_is_named():
    assert _kinds(mi.match(TEXT, {"input_ids": _text()["input_ids"], "mask": np.ones((5, 7), np.int64)})) == [
        ("attention_mask", "missing"), ("mask", "unexpected")]
    assert _kinds(mi.match(TEXT, {**_text(), "attention_mask": np.ones(5, np.int64)})) == [
        ("attention_mask", "rank")]
    wrong = mi.match(IMAGE, {"pixels": np.zeros((4, 1, 8, 9), np.float32)})
    assert _kinds(wrong) == [("pixels", "dim"), ("pixels", "dim")]
    assert "dimension 1 = 3" in wrong[0].expected and wrong[0].found.startswith("1 (array [N, 1, 8, 9])")
    dtype = mi.match(TEXT, _text(dtype=np.int32))
    assert _kinds(dtype) == [("attention_mask", "dtype"), ("input_ids", "dtype")]
    assert (dtype[0].expected, dtype[0].found) == ("int64", "int32")
    uneven = mi.match(TEXT, {**_text(), "attention_mask": np.ones((4, 7), np.int64)})
    assert _kinds(uneven) == [("attention_mask", "samples")]
    assert uneven[0].expected == "5 samples along axis 0 (as 'input_ids')" and uneven[0].found == "4 samples"
    assert _kinds(mi.match(IMAGE, {"pixels": np.zeros((0, 3, 8, 8), np.float32)})) == [("pixels", "samples")]


def test_shapes_fix_dynamic_dims_and_a_shape_that_does_not_fit_is_named():
    fixed = {"input_ids": [1, 16], "attention_mask": [1, 16]}
    assert _kinds(mi.match(TEXT, _text(seq=7), fixed)) == [("attention_mask", "dim"), ("input_ids", "dim")]
    assert mi.match(TEXT, _text(seq=16), fixed) == []
    assert _kinds(mi.match(IMAGE, {"pixels": np.zeros((2, 3, 8, 8), np.float32)}, {"pixels": [1, 4, 8, 8]})) == [
        ("pixels", "shape")]
    assert _kinds(mi.match(TEXT, _text(), {"input_idz": [1, 4]})) == [("input_idz", "unexpected")]


def test_mismatch_table_shows_expected_and_found_and_a_hint():
    table = mi.mismatch_table(mi.match(TEXT, {"input_ids": np.zeros((5, 7), np.int32)}))
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["input", "expected", "found"]
    assert set(lines[1]) <= {"-", "+"}
    body = "\n".join(lines[2:-1])
    assert "input_ids" in body and "int64" in body and "int32" in body
    assert "attention_mask" in body and "nothing" in body
    assert lines[-1].startswith("hint: ") and "input name" in lines[-1] and "dtype" in lines[-1]


# ---------------------------------------------------------------- synthesize


def test_synthesize_is_seeded_at_declared_shapes_dtypes_and_ranges():
    a, described = mi.synthesize(MIXED, None, n=200, seed=7, int_range=(3, 9))
    b, _ = mi.synthesize(MIXED, None, n=200, seed=7, int_range=(3, 9))
    c, _ = mi.synthesize(MIXED, None, n=200, seed=8, int_range=(3, 9))
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed, same arrays
    assert not np.array_equal(a["features"], c["features"])
    assert {k: (v.shape, v.dtype.name) for k, v in a.items()} == {
        "features": ((200, 4), "float32"), "ids": ((200, 2), "int32"), "flags": ((200, 2), "bool")}
    assert a["ids"].min() >= 3 and a["ids"].max() <= 8 and len(np.unique(a["ids"])) == 6
    assert abs(a["features"].mean()) < 0.2 and 0.8 < a["features"].std() < 1.2
    assert 0.3 < a["flags"].mean() < 0.7
    assert mi.match(MIXED, a) == []  # what is drawn fits the model
    assert described["seed"] == 7 and described["int_range"] == [3, 9] and described["samples"] == 200
    assert "uniform integers in [3, 9)" in described["inputs"]["ids"] and "seed 7" in described["summary"]


def test_synthesize_takes_dynamic_dims_from_shapes_or_names_the_fix():
    arrays, _ = mi.synthesize(TEXT, {"input_ids": [1, 32], "attention_mask": [1, 32]}, n=4, seed=0)
    assert arrays["input_ids"].shape == (4, 32) and arrays["input_ids"].dtype == np.int64
    assert 0 <= arrays["input_ids"].min() and arrays["input_ids"].max() < 100  # the default range
    with pytest.raises(UsageError, match=r"input 'input_ids' has a dynamic dimension 1") as e:
        mi.synthesize(TEXT, None, n=4, seed=0)
    assert "--shape input_ids=1x" in e.value.hint
    with pytest.raises(UsageError, match="does not fit the model's shape"):
        mi.synthesize(IMAGE, {"pixels": [1, 4, 8, 8]}, n=2, seed=0)
    with pytest.raises(UsageError, match="holds no uint8 value"):
        mi.synthesize([{"name": "u", "shape": [None, 2], "dtype": "uint8"}], None, n=2, seed=0,
                      int_range=(-10, -1))
