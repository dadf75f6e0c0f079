"""Ways of reaching the device a target measures on: one module each, one small protocol.

The harness asks a runner to run probe requests and never knows where they ran:

- `local.py`: a fresh process on this machine.
- `ssh.py`: a Jetson or a board, through the system OpenSSH client (the user's config, keys,
  agent, aliases and ProxyJump), the Python probe copied to the device.
- `adb.py`: an Android phone through the adb client, the native runner pushed to it.

A runner is opened once per target for a whole bench (`open_runner`): a remote one connects,
checks the host, takes the device's lock (two jobs never measure one board at once), cleans
what killed runs left, and on close removes its run folder and releases the lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgedistill.bench.runners.local import ProbeCommand, ProbeOutcome
    from edgedistill.config import TargetConfig


class Runner(Protocol):
    kind: str  # "local" | "ssh" | "adb": recorded with every result
    remote: bool  # measurements run on another machine than this one

    def run_probe(self, request: dict, *, threads: int, timeout_s: float,
                  command: ProbeCommand | None = None) -> ProbeOutcome:
        """One probe process on the device: the request's paths are this machine's; the runner
        moves the files there and the results back."""

    def probe_command(self, backend: str, executorch_runtime: str,
                      note: Callable[[str], None]) -> tuple[ProbeCommand | None, dict]:
        """Which program measures an artifact of `backend` on this device (None: the Python
        probe), and the `runner` record results keep (native / python, its build, and why)."""

    def conditions(self) -> dict:
        """The device's state before a measurement: load average, usable cores, governor,
        thermal state, and whatever else the device exposes (Jetson: nvpmodel, clocks)."""

    def close(self) -> None:
        """Remove what this run put on the device and release it."""


def open_runner(target: TargetConfig, note: Callable[[str], None] = lambda s: None) -> Runner:
    """The runner `target` names, connected and holding its device (close() releases it).

    Raises InconclusiveError when the device cannot be reached or stays busy, and
    UnsafeModelError (exit 6) when an SSH host key is unknown or changed."""
    if target.runner == "ssh":
        from edgedistill.bench.runners.ssh import SshRunner

        return SshRunner.open(target, note)
    if target.runner == "adb":
        from edgedistill.bench.runners.adb import AdbRunner

        return AdbRunner.open(target, note)
    from edgedistill.bench.runners.local import LocalRunner

    return LocalRunner()
