import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


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
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )



class TinyNet(torch.nn.Module):
    """A conv net small enough for every exporter and quantizer test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))
