"""`edgedistill --help` must start fast: no runtime is imported for it."""

import subprocess
import sys


def _help():
    subprocess.run([sys.executable, "-m", "edgedistill", "--help"], check=True, capture_output=True)


def _bare_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)


def test_help_startup(benchmark):
    benchmark.pedantic(_help, rounds=10, warmup_rounds=1)


def test_bare_interpreter_startup(benchmark):
    """The floor: what --help costs beyond a bare interpreter is edgedistill's own import."""
    benchmark.pedantic(_bare_python, rounds=10, warmup_rounds=1)
