"""Model specs and weight files: safe loading, refusals, mismatches, compatibility checks."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgedistill.artifacts import sha256_file
from edgedistill.errors import (
    EXIT_UNSAFE,
    ModelMismatchError,
    UnsafeModelError,
    UsageError,
)
from edgedistill.specs import check_compatible, load_model
from edgedistill.trust import pickle_imports

STUDENT = "edgedistill.zoo:digits_student"


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Settings:
    """A harmless class, but not on weights_only's allowlist."""


def student_state():
    torch.manual_seed(0)
    return load_model(STUDENT, role="student").state_dict()


def test_factory_spec_builds_an_eval_mode_model():
    model = load_model(STUDENT, role="student")
    assert isinstance(model, nn.Module) and not model.training


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_weights_round_trip(tmp_path, suffix):
    state = student_state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)  # the wrapped form trainers write
    loaded = load_model(STUDENT, path, role="student").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.fixture(params=["torch.save", "pickle.dump"])
def malicious(request, tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if request.param == "torch.save":
        torch.save({"fc.weight": torch.zeros(2), "x": Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"x": Payload(marker)}, f, protocol=4)
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(malicious):
    """RELIABILITY 1: a pickle whose __reduce__ runs a command is refused (exit 6) naming the
    file, its sha256 and the safe alternatives; the command never runs."""
    path, marker = malicious
    with pytest.raises(UnsafeModelError) as info:
        load_model(STUDENT, path, role="teacher")
    assert info.value.exit_code == EXIT_UNSAFE == 6
    message = str(info.value)
    assert str(path) in message and sha256_file(path) in message and "posix.system" in message
    assert "safetensors" in message and "state_dict" in message
    assert not marker.exists()


def test_force_no_weights_only_env_does_not_weaken_loading(malicious, monkeypatch):
    """RELIABILITY 3 (in process; tests/test_security.py has the CLI subprocess)."""
    path, marker = malicious
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeModelError):
        load_model(STUDENT, path, role="teacher")
    assert not marker.exists()


def test_control_the_env_var_really_weakens_a_default_torch_load(tmp_path, monkeypatch):
    # Proves the test above can fail: a torch.load that leaves weights_only unset runs the payload.
    marker = tmp_path / "PWNED"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.warns(UserWarning):
        torch.load(tmp_path / "evil.pt")
    assert marker.exists()


def test_non_allowlisted_globals_are_listed(tmp_path):
    """RELIABILITY 2: the error lists the globals weights_only does not allow; no silent retry."""
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": student_state(), "settings": Settings()}, path)
    assert pickle_imports(path.read_bytes()) == [f"{__name__}.Settings"]
    with pytest.raises(UnsafeModelError, match=rf"import {__name__}\.Settings"):
        load_model(STUDENT, path, role="student")


def test_state_dict_key_mismatch_lists_keys(tmp_path):
    path = tmp_path / "student.safetensors"
    save_file({k: v.contiguous() for k, v in student_state().items()}, path)
    with pytest.raises(UsageError, match=r"missing \(\d+\): .*unexpected \(\d+\): ") as info:
        load_model("edgedistill.zoo:digits_teacher", path, role="teacher")
    assert ", …" in str(info.value)  # long lists are cut to the first few keys


def test_state_dict_shape_mismatch(tmp_path):
    path = tmp_path / "w.pt"
    state = student_state()
    state["16.weight"] = torch.zeros(5, 128)
    torch.save(state, path)
    with pytest.raises(UsageError, match=r"shape file vs model \(1\): 16.weight \(5, 128\) vs \(10, 128\)"):
        load_model(STUDENT, path, role="student")


@pytest.mark.parametrize("suffix,fmt", [(".safetensors", "safetensors"), (".pt", "PyTorch checkpoint")])
def test_truncated_weights(tmp_path, suffix, fmt):
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in student_state().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UsageError, match=rf"loading teacher weights: .* not a readable {fmt}"):
        load_model(STUDENT, path, role="teacher")


def test_garbage_pt_is_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"\x80\x04not a pickle at all" * 10)
    with pytest.raises(UsageError, match="not a readable PyTorch checkpoint") as info:
        load_model(STUDENT, path, role="teacher")
    assert not isinstance(info.value, UnsafeModelError)


def test_non_finite_weights_are_refused(tmp_path):
    """RELIABILITY 14: NaN in teacher weights: refused at load, naming the tensor."""
    state = student_state()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    with pytest.raises(UsageError, match="tensor '0.weight' holds NaN"):
        load_model(STUDENT, tmp_path / "w.safetensors", role="teacher")


def export_small(path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.randn(2, 1, 4, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return model


def test_exported_program(tmp_path):
    model = export_small(tmp_path / "m.pt2")
    loaded = load_model(str(tmp_path / "m.pt2"), role="teacher", trusted={sha256_file(tmp_path / "m.pt2")})
    x = torch.randn(5, 1, 4, 4)
    torch.testing.assert_close(loaded(x), model(x))
    check_compatible(loaded, model, (1, 4, 4), 3)
    (tmp_path / "bad.pt2").write_bytes((tmp_path / "m.pt2").read_bytes()[:200])
    with pytest.raises(UsageError, match="loading teacher model: .* not a readable torch.export .pt2"):
        load_model(str(tmp_path / "bad.pt2"), role="teacher")


def test_bad_specs():
    with pytest.raises(
        UsageError, match="'no_such_pkg.models:net': cannot import module 'no_such_pkg.models'"
    ):
        load_model("no_such_pkg.models:net", role="teacher")
    with pytest.raises(
        UsageError, match="'edgedistill.zoo:resnet50': module 'edgedistill.zoo' has no callable 'resnet50'"
    ):
        load_model("edgedistill.zoo:resnet50", role="teacher")
    with pytest.raises(UsageError, match="not understood.*pkg.mod:factory.*.pt2"):
        load_model("resnet18", role="teacher")
    with pytest.raises(UsageError, match="must return a torch.nn.Module, found dict"):
        load_model("builtins:dict", role="student")


def test_missing_weights_file(tmp_path):
    with pytest.raises(UsageError, match="loading student weights: file not found"):
        load_model(STUDENT, tmp_path / "nope.safetensors", role="student")


def test_head_mismatch_names_both_sizes():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 1000))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(
        ModelMismatchError, match="teacher outputs 1000 classes, student outputs 10, the data has 10"
    ):
        check_compatible(teacher, student, (1, 4, 4), 10)


def test_input_shape_mismatch_names_the_data_shape():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ModelMismatchError, match=r"teacher cannot take the data's input shape \(1, 32, 32\)"):
        check_compatible(teacher, teacher, (1, 32, 32), 10)


def test_compatible_models_pass_and_keep_their_mode():
    student = load_model(STUDENT, role="student").train()
    check_compatible(load_model("edgedistill.zoo:digits_teacher", role="teacher"), student, (1, 32, 32), 10)
    assert student.training
