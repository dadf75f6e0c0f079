"""Bring-your-own teacher, student and data through the CLI and edgedistill.toml."""

import os

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import save_file
from sklearn.datasets import load_digits

MODELS = '''
import torch

def _net(width, classes):
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(width * 8 * 8, classes))

def teacher():
    return _net(16, 10)

def student():
    return _net(4, 10)

def student_3_classes():
    return _net(4, 3)
'''


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARKER', '/tmp/x')}",))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    digits = load_digits()
    x = (digits.images[:, None] / 16.0).astype(np.float32)
    np.savez(tmp_path / "digits8.npz", x=x, y=digits.target.astype(np.int64))
    np.savez(tmp_path / "digits9.npz", x=np.zeros((300, 1, 9, 9), np.float32), y=np.arange(300) % 10)
    torch.manual_seed(0)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import mymodels

        save_file(mymodels.teacher().state_dict(), tmp_path / "teacher.safetensors")
        torch.save(mymodels.teacher().state_dict(), tmp_path / "teacher.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mymodels", None)
    # ROOT too: the CLI then runs this checkout's edgedistill, not the installed one.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    # The teacher is untrained, so at chance (RELIABILITY 30 would stop it): allowed here.
    (tmp_path / "edgedistill.toml").write_text("[teacher]\nallow_weak_teacher = true\n")
    return tmp_path, env


def test_distill_own_models_from_config_file(project):
    tmp, env = project
    (tmp / "edgedistill.toml").write_text(
        '[teacher]\nspec = "mymodels:teacher"\nweights = "teacher.safetensors"\nallow_weak_teacher = true\n'
        '[student]\nspec = "mymodels:student"\n[data]\nspec = "digits8.npz"\n[distill]\nepochs = 1\n'
    )
    r = run_cli(["distill", "--json"], cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp / "runs/default/distill/student.safetensors").is_file()


def test_state_dict_pt_weights_load_with_flags(project):
    tmp, env = project
    r = run_cli(["distill", "--teacher", "mymodels:teacher", "--teacher-weights", "teacher.pt",
                 "--student", "mymodels:student", "--data", "digits8.npz", "--epochs", "1"], cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr


def test_class_count_mismatch_refused_before_training(project):
    tmp, env = project
    r = run_cli(["distill", "--teacher", "mymodels:teacher", "--student", "mymodels:student_3_classes",
                 "--data", "digits8.npz"], cwd=tmp, env=env)
    assert r.returncode == 2, r.stderr
    assert "10" in r.stderr and "3" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "runs/default/distill/student.safetensors").exists()


def test_data_that_does_not_fit_the_model_exits_2(project):
    tmp, env = project
    r = run_cli(["distill", "--teacher", "mymodels:teacher", "--student", "mymodels:student",
                 "--data", "digits9.npz"], cwd=tmp, env=env)
    assert r.returncode == 2, r.stderr
    assert "(1, 9, 9)" in r.stderr and "Traceback" not in r.stderr


def test_malicious_pickle_refused_with_exit_6(project, monkeypatch):
    tmp, env = project
    marker = tmp / "pwned"
    env["EVIL_MARKER"] = str(marker)
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    torch.save({"w": Evil()}, tmp / "evil.pt")
    r = run_cli(["distill", "--teacher", "mymodels:teacher", "--teacher-weights", "evil.pt",
                 "--student", "mymodels:student", "--data", "digits8.npz"], cwd=tmp, env=env)
    assert r.returncode == 6, r.stderr
    assert "sha256" in r.stderr and not marker.exists()
