#!/usr/bin/env python3
"""Set-up and everyday commands; needs only Python 3.10+ (no make, no global installs).

    python3 dev.py demo    # create/reuse .venv, install, run `edgedistill compress` on the built-in default
    python3 dev.py test    # create/reuse .venv, install, run the test suite

`test` also readies what the SSH runner's tests use: OpenSSH's sshd (apt-get install
openssh-server where it is missing and this runs as root) and `.venv-device`, the simulated
device's Python with only numpy and onnxruntime (Python 3.8 from pyenv where there is one, as
JetPack 5 ships; else this Python, saying so). Without them those tests skip with the reason.

The virtual environment is rebuilt when pyproject.toml or this file changes. torch is pinned to
2.13.0 (a CPU build); an unpinned torch would pull a multi-GB CUDA build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".edgedistill-installed"
TORCH = "torch==2.13.0"
DEVICE_VENV = ROOT / ".venv-device"
# What installs on Python 3.8 (FIELD-NOTES: a simulated SSH device); newer Pythons take these too
# up to 3.12. Elsewhere the newest releases are taken.
DEVICE_PACKAGES = ("numpy==1.24.4", "onnxruntime==1.19.2")


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


def ensure_sshd() -> None:
    """OpenSSH's server for the SSH runner's tests: installed with apt-get where it is missing
    and this runs as root; otherwise those tests skip and say why."""
    if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("sshd not installed and cannot be here (needs root and apt-get): the SSH runner's tests will skip")
        return
    try:
        _run("apt-get", "update", "-q")
        _run("apt-get", "install", "-y", "-q", "openssh-server", "openssh-client")
    except subprocess.CalledProcessError:
        print("apt-get could not install openssh-server: the SSH runner's tests will skip")


def _device_base_python() -> tuple[str, str]:
    """(interpreter, why) for the simulated device: pyenv's 3.8 where there is one."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = sorted(Path(root).glob("versions/3.8*/bin/python"))
    if found:
        return str(found[-1]), "Python 3.8, as JetPack 5 ships"
    return sys.executable, f"no Python 3.8 under {root}/versions: the device venv uses this Python {sys.version.split()[0]}"


def ensure_device_venv() -> None:
    """.venv-device: numpy and onnxruntime only (no torch, no edgedistill), like a Jetson's."""
    stamp = DEVICE_VENV / ".edgedistill-device"
    if stamp.exists() and stamp.read_text() == " ".join(DEVICE_PACKAGES):
        return
    python, why = _device_base_python()
    print(f"device venv {DEVICE_VENV}: {why}")
    try:
        if not (DEVICE_VENV / "bin" / "python").exists():
            _run(python, "-m", "venv", DEVICE_VENV)
        pip = (DEVICE_VENV / "bin" / "python", "-m", "pip", "install", "-q")
        try:
            _run(*pip, *DEVICE_PACKAGES)
        except subprocess.CalledProcessError:  # a Python those pins have no wheels for
            _run(*pip, *(p.split("==")[0] for p in DEVICE_PACKAGES))
    except subprocess.CalledProcessError:
        print("could not build the device venv: the SSH runner's tests will skip")
        return
    stamp.write_text(" ".join(DEVICE_PACKAGES))


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_venv()
    if argv[1] == "demo":
        return subprocess.call([str(BIN / "edgedistill"), "compress", *argv[2:]], cwd=ROOT)
    if argv[1] == "test":
        ensure_sshd()
        ensure_device_venv()
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *argv[2:]], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
