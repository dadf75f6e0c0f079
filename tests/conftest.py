import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests"


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """One teacher-logit cache for the whole session (EDGEDISTILL_CACHE_DIR, which every CLI
    subprocess inherits): each test's run folder is new, and without it every test that distills
    would compute the same built-in teacher's outputs again. Hits are keyed by teacher and data."""
    from edgedistill.config import CACHE_DIR_ENV

    folder = tmp_path_factory.mktemp("shared-cache")
    saved = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = saved


@pytest.fixture
def cli_env():
    """Environment for running the CLI in a subprocess from the repo's virtualenv."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_cli(args, cwd=None, env=None, timeout=900):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "edgedistill", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )



def structured_images(n: int, seed: int) -> np.ndarray:
    """Random-ish images: noise over per-sample brightness and gradients, so that samples differ
    in more than noise and the logits' order means something."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, 32, dtype=np.float32)
    slopes = rng.normal(size=(n, 2, 1, 1)).astype(np.float32)
    images = slopes[:, :1] * ramp[None, None, :, None] + slopes[:, 1:] * ramp[None, None, None, :]
    images += rng.normal(size=(n, 1, 1, 1)).astype(np.float32)
    return (images + 0.3 * rng.normal(size=(n, 1, 32, 32))).astype(np.float32)


class TinyNet(torch.nn.Module):
    """A conv net small enough for every exporter and quantizer test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


@pytest.fixture
def fake_probe(tmp_path, monkeypatch):
    from edgedistill.bench.runners import local

    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    shutil.copy(local.PROBE_DIR / "probe.py", probe_dir / "probe.py")
    shutil.copy(HERE / "fake_runtimes.py", probe_dir / "runtimes.py")
    monkeypatch.setattr(local, "PROBE_DIR", probe_dir)
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.arange(40, dtype=np.float32).reshape(10, 4))
    return tmp_path, inputs
