#!/usr/bin/env python3
"""Set-up and everyday commands; needs only Python 3.10+ (no make, no global installs).

    python3 dev.py demo    # create/reuse .venv, install, run `edgedistill compress` on the built-in default
    python3 dev.py test    # create/reuse .venv, install, run the test suite

The virtual environment is rebuilt when pyproject.toml or this file changes. torch is pinned to
2.13.0 (a CPU build); an unpinned torch would pull a multi-GB CUDA build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".edgedistill-installed"
TORCH = "torch==2.13.0"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def ensure_venv() -> None:
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = (BIN / "python", "-m", "pip")
    _run(*pip, "install", "--upgrade", "pip")
    _run(*pip, "install", TORCH)
    _run(*pip, "install", "-e", ".[all,dev]", TORCH)
    STAMP.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_venv()
    if argv[1] == "demo":
        return subprocess.call([str(BIN / "edgedistill"), "compress", *argv[2:]], cwd=ROOT)
    if argv[1] == "test":
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *argv[2:]], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
