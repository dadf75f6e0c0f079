"""Bad input to `edgedistill distill` (issue 4, item 9): exit 2, one clear line, nothing trained.

Every case goes through the real CLI (CliRunner on edgedistill.cli:cli) with tiny models from an
entrypoint module written to a temporary folder, and checks three things: the exit code is 2,
stderr is one `error:` line (plus an optional `  hint:` line) naming what was expected and what
was found, and the run folder holds no file at all, so the refusal came before the first
training step and left nothing half-written (no checkpoint, weights, history or manifest).
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from edgedistill.cli import cli

MODULE = "badinput_models"  # a name no other test uses: sys.modules caches it for the session
MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class ConvNet(nn.Module):
        """Input (1, 4, 4); named submodules so feature-path errors have real names to list."""

        def __init__(self, classes):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(64, classes)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


    def mlp():  # takes 64 features (any shape that flattens to 64), 3 classes
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


    def teacher10():
        return ConvNet(10)


    def student7():
        return ConvNet(7)


    def net3():
        return ConvNet(3)
''')


@pytest.fixture(scope="module", autouse=True)
def models_on_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("entrypoints")
    (folder / f"{MODULE}.py").write_text(MODELS)
    sys.path.insert(0, str(folder))
    yield
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def npz(path, x, y=None):
    np.savez(path, **({"x": x} if y is None else {"x": x, "y": y}))
    return str(path)


def samples(n=300, shape=(1, 4, 4), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), (np.arange(n) % classes).astype(np.int64)


def distill_cli(tmp_path, monkeypatch, *args):
    """`edgedistill distill ARGS` run from tmp_path (so an edgedistill.toml there is picked up)."""
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(
        cli, ["distill", *map(str, args), "--out-dir", str(tmp_path / "runs"), "--epochs", "1", "-q"]
    )


def assert_refused(result, tmp_path, *expected):
    """Exit 2, one `error:` line holding every `expected` substring, and nothing written."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("  hint: ") for line in lines[1:]), result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    runs = tmp_path / "runs"
    written = sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file()) if runs.exists() else []
    assert written == [], f"files written before the refusal: {written}"
    assert not (runs / "default" / "distill" / "checkpoint.pt").exists()
    return lines[0]


def test_a_teacher_and_student_heads_differ(tmp_path, monkeypatch):
    """RELIABILITY 11: heads of 10 vs 7 classes through the CLI: exit 2 naming both sizes and the data's,
    before any step."""
    data = npz(tmp_path / "d.npz", *samples(classes=10))
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:teacher10",
                         "--student", f"{MODULE}:student7", "--data", data)
    assert_refused(result, tmp_path, "teacher outputs 10 classes", "student outputs 7", "data has 10")


def test_b_data_shape_does_not_fit_the_teacher(tmp_path, monkeypatch):
    data = npz(tmp_path / "d.npz", *samples(shape=(5, 5)))  # 25 features; the teacher takes 64
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:mlp",
                         "--student", f"{MODULE}:mlp", "--data", data)
    line = assert_refused(result, tmp_path, "teacher cannot take the data's input shape (5, 5)")
    assert "25" in line and "64" in line  # torch's own words: found 2x25, expected 64 inputs


def test_c_empty_data_set(tmp_path, monkeypatch):
    data = npz(tmp_path / "empty.npz", np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "empty.npz", "every split needs at least 10 samples",
                   "train 0, validation 0, test 0", "from 0 labelled")


def test_c_tiny_data_set_states_the_threshold(tmp_path, monkeypatch):
    x, y = samples(n=3)
    data = npz(tmp_path / "tiny.npz", x, y)
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "every split needs at least 10 samples",
                   "train 2, validation 0, test 1", "from 3 labelled")


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_d_feature_path_that_does_not_exist_lists_the_valid_paths(tmp_path, monkeypatch, role):
    paths = {"student": "conv", "teacher": "conv", role: "nope.layer"}
    (tmp_path / "edgedistill.toml").write_text(
        f'[[distill.features]]\nstudent = "{paths["student"]}"\nteacher = "{paths["teacher"]}"\n'
    )
    data = npz(tmp_path / "d.npz", *samples())
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    line = assert_refused(result, tmp_path, f"no module 'nope.layer' in the {role}", "valid paths:")
    listed = line.split("valid paths:", 1)[1]
    assert all(name in listed for name in ("conv", "bn", "head")), line


def test_e_labels_beyond_the_teachers_classes(tmp_path, monkeypatch):
    x, y = samples()
    y[::10] = 5  # 30 samples of a class 5: the 3-class models have no output for it
    data = npz(tmp_path / "d.npz", x, y)
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "teacher outputs 3 classes", "data has 6")


def test_e_negative_label_names_the_first_bad_index(tmp_path, monkeypatch):
    x, y = samples()
    y[[42, 99]] = -3  # -1 means unlabelled; anything lower is a mistake
    data = npz(tmp_path / "d.npz", x, y)
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "labels should be class indices >= 0, or -1", "found -3 at index 42")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_e_nan_or_inf_in_the_data_names_the_first_bad_sample(tmp_path, monkeypatch, bad):
    x, y = samples()
    x[17, 0, 2, 3] = bad
    x[200, 0, 0, 0] = bad
    data = npz(tmp_path / "d.npz", x, y)
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "x should hold finite numbers", "in 2 sample(s)", "first at index 17")


def test_e_integer_data_stays_integer_and_a_float_model_is_told(tmp_path, monkeypatch):
    """Integer x is kept as int64 (token ids must not become floats: 2**24 + 1 would round); a
    model that takes floats is refused before training with a hint to store floats."""
    x = np.zeros((300, 64), np.int64)
    x[5, 3] = 2**24 + 1
    data = npz(tmp_path / "d.npz", x, samples()[1])
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:mlp",
                         "--student", f"{MODULE}:mlp", "--data", data)
    assert_refused(result, tmp_path, "cannot take the data's input shape (64,) int64")
    assert "hint: integer data stays int64 (token ids); store x as float32" in result.stderr


def test_e_uint64_data_beyond_int64_names_the_first_bad_sample(tmp_path, monkeypatch):
    x = np.zeros((300, 64), np.uint64)
    x[5, 3] = 2**63 + 1  # int64, which integer inputs become, would wrap it
    data = npz(tmp_path / "d.npz", x, samples()[1])
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:mlp",
                         "--student", f"{MODULE}:mlp", "--data", data)
    assert_refused(result, tmp_path, "within int64's range", f"found {2**63 + 1}", "first at index 5")


@pytest.mark.parametrize("bad", [1e39, -1e300])
def test_e_float64_data_beyond_float32_range_names_the_first_bad_sample(tmp_path, monkeypatch, bad):
    """Issue 9 finding 11b: finite in float64, ±Inf once cast to float32; refused before step 1."""
    x, y = samples()
    x = x.astype(np.float64)
    x[42, 0, 1, 1] = bad
    x[250, 0, 3, 3] = 3.5e38  # just past float32's largest finite value (3.4028e38)
    x[7, 0, 0, 0] = 3.4e38  # inside the range: not a bad sample
    data = npz(tmp_path / "d.npz", x, y)
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3",
                         "--student", f"{MODULE}:net3", "--data", data)
    assert_refused(result, tmp_path, "float32's finite range", f"found {bad:g}", "in 2 sample(s)",
                   "first at index 42")


@pytest.mark.parametrize(("spec", "expected"), [
    ("prune:1.5", ["'prune:1.5'", "width must be a number between 0 and 1", "found '1.5'"]),
    ("prune:half", ["width must be a number between 0 and 1", "found 'half'"]),
    ("shallow:1", ["'shallow:1'", "k must be an integer >= 2", "found '1'"]),
    ("resnet18", ["student spec 'resnet18' is not understood", "pkg.mod:factory"]),
])
def test_e_student_spec_not_understood(tmp_path, monkeypatch, spec, expected):
    data = npz(tmp_path / "d.npz", *samples())
    result = distill_cli(tmp_path, monkeypatch, "--teacher", f"{MODULE}:net3", "--student", spec, "--data", data)
    assert_refused(result, tmp_path, *expected)
