"""Property-based fuzzing of the front doors (issue 9 finding 8; RELIABILITY 7, 8, 28).

Hypothesis feeds the config, target and data front doors random and mutated inputs: random bytes,
valid TOML with values swapped for other types, keys deleted, renamed or moved, tables replaced
by scalars, huge numbers and random unicode; for data, .npz files with wrong dtypes, shapes and
keys, object arrays, truncated or byte-flipped archives, and files that are not archives at all.
Whatever comes in, the answer is a documented exit code other than 3 (internal error), at most
one `error:` line (plus an optional hint) and no traceback.

The doors are the CLI's own: `_workspace` (config, flags, target files, run folder) behind the
CLI's error handler, called through click's CliRunner in-process for speed; the data door adds
the data loader. A few real subprocess runs of `python -m edgedistill` check the same at the
process boundary.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import zipfile
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgedistill.cli import _config_options, _handle_errors, _workspace
from edgedistill.config import Config

DOCUMENTED = {0, 1, 2, 4, 5, 6}  # 3 is "internal error": a bug, never an answer to bad input
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@click.command()
@_config_options
@_handle_errors
def config_door(**opts):
    """What every pipeline verb does before its first model: config, flags, targets, run folder."""
    _workspace(opts)


@click.command()
@_config_options
@_handle_errors
def data_door(**opts):
    """The same, then the data loader: what `distill` does before it loads the teacher."""
    from edgedistill.data import load_data

    ws = _workspace(opts)
    load_data(ws.cfg.data, seed=ws.cfg.run.seed)


def knock(door, args, cwd: Path):
    import os

    old = os.getcwd()
    os.chdir(cwd)  # no edgedistill.toml of the repository's own is picked up
    try:
        return CliRunner().invoke(door, [str(a) for a in args])
    finally:
        os.chdir(old)


def assert_answered(result) -> None:
    """A documented exit code other than 3, at most one error line (plus a hint), no traceback."""
    assert result.exit_code in DOCUMENTED, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    if result.exit_code == 0:
        assert errors == [], result.stderr
    else:
        assert len(errors) == 1 and lines[0].startswith("error: "), result.stderr
        assert all(line.startswith("  hint: ") for line in lines[1:]), result.stderr


# ---------------------------------------------------------------- TOML documents

# No TOML writer ships with the venv (tomllib only reads): values are written inline, which
# TOML 1.0 allows everywhere. JSON strings are TOML basic strings once non-ASCII stays raw.


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in doc.items())


def drop_none(v):
    if isinstance(v, dict):
        return {k: drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [drop_none(x) for x in v]
    return v


def tomllib_load(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


VALID_CONFIG = drop_none(Config().model_dump(mode="json"))
VALID_CONFIG["distill"]["features"] = [{"student": "s.0", "teacher": "t.0", "weight": 1.0}]
VALID_TARGET = tomllib_load(ROOT / "targets" / "local-cpu.toml")

NASTY_STRINGS = ["10", "10ms", "1e3", "", " ", "nan", "true", "../x", "/etc", "a/b", ".hidden", "a\x00b",
                 "onnxruntim", "openvino", "fp3", "local-cpu", "builtin:digits", "x.npz", "\u202e", "😀" * 30,
                 "hf:", "pkg.mod:", ":factory", "prune:-1", "shallow:0"]
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(),  # beyond 64 bits: tomllib reads them, the models must still answer
    st.sampled_from([0, -1, 1, 10**400, 2**31, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["p90_ms", "onnxruntime", "fp32", "epochs", "x"]), inner, max_size=3),
    max_leaves=8)


def paths_in(doc, prefix=()):
    """Every key path in a nested document (dicts, and dicts inside lists)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(paths_in(v, prefix + (k,)))
    return out


def node_at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, base: dict) -> dict:
    """`base` with a few mutations: swapped values, deleted/renamed/moved keys, tables as scalars."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_in(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = node_at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["swap", "delete", "rename", "move_up", "move_top", "scalar_table", "add"]))
        if op == "swap" or (op == "scalar_table" and not isinstance(parent[key], (dict, list))):
            parent[key] = draw(values)
        elif op == "scalar_table":
            parent[key] = draw(scalars)
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.text(max_size=10) | st.sampled_from([str(key)[:-1], str(key) + "s", str(key).upper()]))
            parent[new] = parent.pop(key)
        elif op in ("move_up", "move_top") and isinstance(parent, dict) and len(path) > 1:
            grand = doc if op == "move_top" else node_at(doc, path[:-2])
            if isinstance(grand, dict):
                grand[str(key)] = parent.pop(key)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(values)
    return doc


def write_in(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@st.composite
def edited_text(draw, text: str) -> str:
    """Character-level edits of a valid TOML text: what a careless editor or a bad merge leaves."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(chars)))
        insert = draw(st.text(max_size=4) | st.sampled_from(['"', "[", "]", "=", "\n", "#", "'''", "\\", "."]))
        cut = draw(st.integers(0, 3))
        chars[at:at + cut] = list(insert)
    return "".join(chars)


# ---------------------------------------------------------------- config and target doors


@FUZZ
@given(content=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_reliability_7_random_bytes_as_config_or_target(content):
    """RELIABILITY 7 / finding 8: any byte string as a config file and as a target file."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_in(folder, "fuzz.toml", content)
        assert_answered(knock(config_door, ["-c", path, "--out-dir", folder / "runs"], folder))
        assert_answered(knock(config_door, ["--target", path, "--out-dir", folder / "runs"], folder))
        assert not (folder / "runs").exists()  # no front door writes


@FUZZ
@given(doc=mutated(VALID_CONFIG), epochs=st.none() | st.integers(-3, 3), run_name=st.none() | st.sampled_from(
    ["r", "../x", "/abs", "a/b", ".h", "ok.1"]), backend=st.none() | st.sampled_from(["onnxruntime", "onnxrt"]))
def test_reliability_7_mutated_config_with_flags(doc, epochs, run_name, backend):
    """RELIABILITY 7 / finding 8: valid edgedistill.toml, mutated, combined with the flags that set
    keys inside its tables (a scalar `distill = 3` plus --epochs crashed the override loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_in(folder, "edgedistill.toml", to_toml(doc))
        args = ["-c", path, "--out-dir", folder / "runs"]
        args += ["--epochs", epochs] if epochs is not None else []
        args += ["--run-name", run_name] if run_name is not None else []
        args += ["--backend", backend] if backend is not None else []
        result = knock(config_door, args, folder)
        assert_answered(result)
        assert result.exit_code in (0, 2)
        assert not (folder / "runs").exists() and not (folder.parent / "x").exists()


@FUZZ
@given(doc=mutated(VALID_TARGET))
def test_reliability_7_mutated_target(doc):
    """RELIABILITY 7 / finding 8: the shipped local-cpu target, mutated."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_in(folder, "t.toml", to_toml(doc))
        result = knock(config_door, ["--target", path, "--out-dir", folder / "runs"], folder)
        assert_answered(result)
        assert result.exit_code in (0, 2)


@FUZZ
@given(text=edited_text((ROOT / "targets" / "local-cpu.toml").read_text()))
def test_reliability_7_hand_edited_target_text(text):
    """RELIABILITY 7 / finding 8: character-level edits of a valid target (broken quotes, brackets,
    duplicate keys, stray unicode)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_in(folder, "t.toml", text)
        result = knock(config_door, ["--target", path, "--out-dir", folder / "runs"], folder)
        assert_answered(result)
        assert result.exit_code in (0, 2)


flag_text = st.text(max_size=30) | st.sampled_from(NASTY_STRINGS)


@FUZZ
@given(flags=st.dictionaries(st.sampled_from(["--run-name", "--out-dir", "--target", "--teacher-weights",
                                              "--backend", "--teacher", "--student", "--data"]),
                             flag_text, max_size=4))
def test_reliability_28_fuzzed_flags(flags):
    """RELIABILITY 7 / 28: random text in every flag that takes a name or a path: answered, and
    nothing is written, inside the folder or beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "work"
        folder.mkdir()
        # A NUL cannot reach a real process's argv; the API's paths are checked for it (test_config).
        args = [a for flag, value in flags.items() for a in (flag, value) if "\x00" not in value]
        if "--out-dir" not in flags:
            args += ["--out-dir", folder / "runs"]
        result = knock(config_door, args, folder)
        assert_answered(result)
        assert result.exit_code in (0, 2)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["work"] and list(folder.iterdir()) == []


# ---------------------------------------------------------------- data door

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int8, np.uint64, np.bool_, np.complex64,
          "<U3", "S2", "datetime64[s]", "timedelta64[ms]", [("a", "<f4"), ("b", "<i4")]]


@st.composite
def arrays(draw, min_rows=0):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rows = draw(st.integers(min_rows, 60))
    shape = (rows, *draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
    if draw(st.booleans()):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


def savez(path: Path, compressed: bool = False, **arrays) -> None:
    with open(path, "wb") as f:  # a file object: numpy appends ".npz" to a name like d.NPZ
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


@st.composite
def npz_files(draw, folder: Path) -> Path:
    path = folder / draw(st.sampled_from(["d.npz", "d.NPZ"]))
    kind = draw(st.sampled_from(["arrays", "arrays", "labelled", "object", "npy", "bytes", "damaged"]))
    keys = st.sampled_from(["x", "y", "x", "y", "X", "images", "labels"]) | st.text(
        alphabet=st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)
    if kind == "arrays":
        savez(path, **draw(st.dictionaries(keys, arrays(), max_size=3)))
    elif kind == "labelled":  # near-valid: enough rows, so the checks past the reading run too
        n = draw(st.integers(30, 120))
        x = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64, np.int64, np.uint8])), (n, 3),
                            elements=None))
        y = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int8, np.uint64, np.float32])), (n,)))
        savez(path, x=x, y=y)
    elif kind == "object":  # must be refused without unpickling (allow_pickle=False)
        savez(path, x=np.array([1, "a", None, {"k": 2}] * 10, dtype=object), y=np.arange(40))
    elif kind == "npy":  # a .npy saved under a .npz name
        np.save(folder / "tmp.npy", draw(arrays()))
        (folder / "tmp.npy").rename(path)
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200) | st.just(b"PK\x03\x04") | st.just(b"\x80\x04K\x01.")))
    else:  # a valid archive, truncated or with flipped bytes
        n = 60
        savez(path, draw(st.booleans()), x=np.ones((n, 2), np.float32), y=np.arange(n) % 3)
        data = bytearray(path.read_bytes())
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data) - 1))]
        else:
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        path.write_bytes(bytes(data))
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reliability_8_fuzzed_npz_data(data):
    """RELIABILITY 8 / finding 8: .npz files with wrong dtypes, shapes and keys, object arrays,
    a .npy under a .npz name, random bytes, truncated and byte-flipped archives: exit 2 or a
    loaded data set, never an internal error; nothing is unpickled."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = data.draw(npz_files(folder))
        result = knock(data_door, ["--data", path, "--out-dir", folder / "runs"], folder)
        assert_answered(result)
        assert result.exit_code in (0, 2)
        assert not (folder / "runs").exists()


def test_reliability_8_object_array_is_refused_without_unpickling(tmp_path):
    """RELIABILITY 8: an object array in the data is refused by np.load(allow_pickle=False): the
    pickled payload (it would create a file when unpickled) never runs."""
    from test_data import TouchOnUnpickle

    marker = tmp_path / "code-ran"
    np.savez(tmp_path / "d.npz", x=np.array([TouchOnUnpickle(marker)] * 50), y=np.arange(50) % 2)
    result = knock(data_door, ["--data", tmp_path / "d.npz", "--out-dir", tmp_path / "runs"], tmp_path)
    assert_answered(result)
    assert result.exit_code == 2 and "allow_pickle=False" in result.stderr
    assert not marker.exists()


def test_fuzz_strategies_reach_valid_inputs_too(tmp_path):
    """The doors do open: the unmutated documents pass (exit 0), so the fuzz is not testing a
    door that refuses everything."""
    config = write_in(tmp_path, "c.toml", to_toml(VALID_CONFIG))
    target = write_in(tmp_path, "t.toml", to_toml(VALID_TARGET))
    assert knock(config_door, ["-c", config, "--target", target, "--out-dir", tmp_path / "runs"],
                 tmp_path).exit_code == 0
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32),
             y=np.arange(120) % 3)
    assert knock(data_door, ["--data", tmp_path / "d.npz", "--out-dir", tmp_path / "runs"], tmp_path).exit_code == 0


# ---------------------------------------------------------------- real processes


def subprocess_cases(tmp_path: Path) -> list[tuple[list, str]]:
    write_in(tmp_path, "binary.toml", bytes(range(256)))
    write_in(tmp_path, "latin1.toml", "[distill]\nepochs = 3 # d\xe9j\xe0\n".encode("latin-1"))
    write_in(tmp_path, "scalar.toml", "distill = 3\n")
    (tmp_path / "folder.toml").mkdir()
    np.save(tmp_path / "arr.npy", np.zeros((50, 3), np.float32))
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (9")
    out = ["--out-dir", tmp_path / "runs", "-q"]
    return [
        (["bench", "-c", tmp_path / "binary.toml", *out], "expected a UTF-8 TOML config file, found binary data"),
        (["bench", "--target", tmp_path / "latin1.toml", *out], "found bytes that are not UTF-8"),
        (["distill", "-c", tmp_path / "scalar.toml", "--epochs", "2", *out], "distill: expected a table"),
        (["bench", "--target", tmp_path / "folder.toml", *out], "expected a TOML target file, found a directory"),
        (["distill", "--data", tmp_path / "arr.npz", *out], "arr.npz: expected a .npz archive of arrays x and y, "
                                                           "found a single .npy array"),
        (["distill", "--data", tmp_path / "cut.npz", *out], "cut.npz: expected a readable .npz"),
        (["distill", "--run-name", "../escape", *out], "run.name"),
    ]


def test_finding_8_bad_input_in_real_processes(tmp_path, cli_env):
    """Finding 8 at the process boundary: each bad input is exit 2 with one error line naming
    the problem, no traceback, nothing written."""
    for args, needle in subprocess_cases(tmp_path):
        r = run_cli(args, cwd=tmp_path, env=cli_env, timeout=120)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        lines = r.stderr.splitlines()
        assert lines[0].startswith("error: ") and needle in lines[0], (needle, r.stderr)
        assert all(line.startswith("  hint: ") for line in lines[1:]), r.stderr
        assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("doc", [VALID_CONFIG])
def test_writer_round_trips(doc, tmp_path):
    """The test's own TOML writer: what it writes reads back as the same document."""
    assert tomllib_load(write_in(tmp_path, "c.toml", to_toml(doc))) == doc
