"""What the SSH and adb runners share: moving a probe request's files to a device and back.

A remote run has one folder on the device (`Transport.run_dir`, made when the transport opened
and removed when it closes). In it:

    m/<key>/...      each model's files, uploaded once per run (an IR's .bin, ONNX external data
                     beside the model, at the same relative paths)
    in/<key>/...     each inputs file, uploaded once
    cache/<key>/     the runtime's model cache folders the harness asks for
    p<N>/            one probe: request.json, what the command prepared (the native runner's raw
                     inputs), result.json (+ .partial), outputs.npy

The request the harness built names this machine's files; `RemoteRunner` rewrites every path in
it to the device's, runs the program there under a timeout that kills its process group, and
brings back the result (or, after a timeout, the partial result the probe saves as it goes) and
the outputs file. A link that drops mid-probe is the outcome "lost": inconclusive, never a pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgedistill.bench.runners.local import ProbeCommand, ProbeOutcome, ProbeSetupError, _read_json, _read_partial

# What a probe's program needs on the device besides its request: the Python probe's two files.
PROBE_FILES = ("probe.py", "runtimes.py")


class DeviceLost(Exception):
    """The link to the device dropped (ssh exit 255, adb "device offline"), or it stopped answering."""


@dataclass
class Execution:
    status: str  # "exited" | "timeout" (the device-side timeout killed the group) | "lost"
    returncode: int | None = None
    detail: str = ""  # stderr tail, or why the link was lost


class Transport(Protocol):
    kind: str  # "ssh" | "adb"
    name: str  # the device as messages name it: the ssh host, the adb serial
    run_dir: str  # this run's folder on the device (POSIX path)

    def put(self, pairs: list[tuple[Path, str]]) -> None:
        """Copy local files to device paths (parents made). Raises DeviceLost."""

    def get(self, remote: str, local: Path) -> bool:
        """Copy a device file here; False when it is not there. Raises DeviceLost."""

    def program(self, command: ProbeCommand | None, request: dict, request_path: str) -> list[str]:
        """The device-side argv of the probe's program (the Python probe, or a native runner
        already on the device), for a request already rewritten to device paths."""

    def execute(self, argv: list[str], *, cwd: str, env: dict[str, str], timeout_s: float) -> Execution:
        """Run argv on the device in a new process group, killed whole after `timeout_s`;
        the exit status from an explicit marker, not the transport's."""

    def conditions(self) -> dict:
        """The device's state now (see runners.Runner.conditions)."""

    def close(self) -> None:
        """Remove run_dir and release the device."""


def thread_vars(threads: int) -> dict[str, str]:
    """The thread pools a runtime may pull in, pinned on the device as local.thread_env does here."""
    return {**{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "PYTHONDONTWRITEBYTECODE": "1"}


def _key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16]


def _file_key(path: Path) -> str:
    """Which upload a local file is: its path, size and modification time (a rewritten file is new)."""
    st = path.stat()
    return _key(path.resolve(), st.st_size, st.st_mtime_ns)


class RemoteRunner:
    """A runner over a Transport: the Runner protocol of runners/__init__.py."""

    remote = True

    def __init__(self, transport: Transport):
        self.transport = transport
        self.kind = transport.kind
        self._uploaded: dict[str, str] = {}  # file key -> device path
        self._probes = 0

    # ------------------------------------------------------------ files

    def _upload(self, local: Path, remote: str, pending: list[tuple[Path, str]]) -> str:
        key = _file_key(local)
        if key not in self._uploaded:
            pending.append((local, remote))
            self._uploaded[key] = remote
        return self._uploaded[key]

    def _model_paths(self, request: dict, pending: list) -> str:
        """The model's files under m/<key>/, at their paths relative to the model's folder."""
        model = Path(request["model"])
        files = [Path(f) for f in request.get("model_files") or [model]]
        folder = _key(*sorted(_file_key(f) for f in files))
        base = posixpath.join(self.transport.run_dir, "m", folder)
        mapped = None
        for f in files:
            rel = os.path.relpath(f.resolve(), model.resolve().parent).replace(os.sep, "/")
            if rel.startswith("../"):  # the model checks keep companions inside the model's folder
                rel = f.name
            remote = self._upload(f, posixpath.join(base, rel), pending)
            if f.resolve() == model.resolve():
                mapped = remote
        return mapped or self._upload(model, posixpath.join(base, model.name), pending)

    def _translate(self, request: dict, staged: Path, probe_dir: str, pending: list) -> dict:
        """The request with every path on this machine replaced by the device's."""
        run_dir = self.transport.run_dir
        out = dict(request, model=self._model_paths(request, pending),
                   result_path=posixpath.join(probe_dir, "result.json"), parent_start_wall_ns=None)
        out.pop("model_files", None)
        if request.get("inputs"):
            local = Path(request["inputs"])
            out["inputs"] = self._upload(local, posixpath.join(run_dir, "in", _file_key(local), local.name), pending)
        if request.get("outputs_path"):
            out["outputs_path"] = posixpath.join(probe_dir, "outputs.npy")
        if request.get("cache"):
            out["cache"] = {**request["cache"], "dir": posixpath.join(run_dir, "cache", _key(request["cache"]["dir"]))}
        # What the command prepared in the staging folder (the native runner's spec and raw
        # inputs, which it names relative to the spec) goes beside the request.
        for f in sorted(staged.iterdir()):
            pending.append((f, posixpath.join(probe_dir, f.name)))
            for k, v in request.items():
                if isinstance(v, str) and v == str(f):
                    out[k] = posixpath.join(probe_dir, f.name)
        return out

    # ------------------------------------------------------------ the protocol

    def run_probe(self, request: dict, *, threads: int, timeout_s: float,
                  command: ProbeCommand | None = None) -> ProbeOutcome:
        self._probes += 1
        probe_dir = posixpath.join(self.transport.run_dir, f"p{self._probes}")
        name = self.transport.name
        with tempfile.TemporaryDirectory(prefix="edgedistill-remote-") as tmp:
            staged, back = Path(tmp) / "staged", Path(tmp) / "back"
            staged.mkdir()
            back.mkdir()
            try:
                prepared = command.prepare(dict(request), staged) if command else dict(request)
            except ProbeSetupError as e:
                return ProbeOutcome("error", {"ok": False, "error_type": e.error_type, "error": str(e)},
                                    f"{e.error_type}: {e}")
            pending: list[tuple[Path, str]] = []
            remote_request = self._translate(prepared, staged, probe_dir, pending)
            request_file = Path(tmp) / "request.json"
            request_file.write_text(json.dumps(remote_request))
            pending.append((request_file, posixpath.join(probe_dir, "request.json")))
            try:
                self.transport.put(pending)
                argv = self.transport.program(command, remote_request, posixpath.join(probe_dir, "request.json"))
                run = self.transport.execute(argv, cwd=probe_dir, env=thread_vars(threads), timeout_s=timeout_s)
                if run.status == "lost":
                    return ProbeOutcome("lost", None, f"lost the link to {name} during the probe: {run.detail}")
                result_path = back / "result.json"
                if run.status == "timeout":
                    partial = back / "result.json.partial"
                    if self.transport.get(remote_request["result_path"] + ".partial", partial):
                        self.transport.get(remote_request["result_path"] + ".partial.warm_ns",
                                           Path(str(partial) + ".warm_ns"))
                    return ProbeOutcome("timeout", _read_partial(partial) if partial.exists() else None,
                                        f"no result within {timeout_s:g} s on {name}; process group killed")
                got = self.transport.get(remote_request["result_path"], result_path)
                result = _read_json(result_path) if got else None
                if result and result.get("ok") and request.get("outputs_path"):
                    if not self.transport.get(remote_request["outputs_path"], Path(request["outputs_path"])):
                        result = None
            except DeviceLost as e:
                return ProbeOutcome("lost", None, f"lost the link to {name}: {e}")
        code = run.returncode
        if result is None:
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited {code}"
            return ProbeOutcome("crashed", None, f"probe on {name} {how} without a result: {run.detail}")
        if not result.get("ok"):
            return ProbeOutcome("error", result, f"{result.get('error_type')}: {result.get('error')}")
        if result.get("outputs_path"):
            result["outputs_path"] = request.get("outputs_path")  # this machine's copy
        return ProbeOutcome("ok", result)

    def probe_command(self, backend, executorch_runtime, note=lambda s: None):
        """The Python probe, copied to the device (transports with a native runner override this)."""
        if backend == "executorch" and executorch_runtime == "native":
            reason = (f"the {self.kind} runner measures with the Python probe on the device "
                      "(a native runner for it is not built here)")
            note(f"{self.transport.name}: {reason}")
            return None, {"kind": "python", "fallback_reason": reason}
        return None, {"kind": "python"}

    def conditions(self) -> dict:
        return self.transport.conditions()

    def close(self) -> None:
        self.transport.close()
