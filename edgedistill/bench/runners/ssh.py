"""A Jetson or a board over SSH, through the system OpenSSH client.

The system client, not a Python SSH library, so what users already set up applies: their
~/.ssh/config (or the profile's `[ssh] config`, passed as -F), keys, agent, aliases, ProxyJump.
Every connection runs with BatchMode (never a prompt in CI), ConnectTimeout, and keepalives
(ServerAliveInterval x ServerAliveCountMax bound how long a dead link goes unnoticed), and host
keys are checked against known_hosts and never accepted automatically (StrictHostKeyChecking=yes):
an unknown or changed key stops the command (exit 6) before anything runs on the device.

One master connection serves the whole run (ControlMaster, its socket in a private folder of
ours, closed with `ssh -O exit`). On it, one long session runs device_agent.py `hold`: it takes
the device's flock (two jobs never measure one board at once; the second queues, bounded), cleans
folders of killed runs, makes this run's folder and blocks on its stdin; closing that session
(or the link dropping) ends the run on the device. Each probe is `device_agent.py run` under a
device-side timeout that kills the probe's process group; its exit status comes from the
agent's marker line, since ssh's own 255 also means "the link dropped" (the outcome "lost").

Every remote argument is quoted (shlex.join): paths with spaces, `;` or `$(...)` reach the
device literally. Files travel as a tar stream over the same connection.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import posixpath
import queue
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from edgedistill.bench.runners.local import PROBE_DIR, ProbeCommand, ProbeOutcome, run_group
from edgedistill.bench.runners.remote import PROBE_FILES, DeviceLost, Execution, RemoteRunner
from edgedistill.config import SshTarget, TargetConfig
from edgedistill.errors import HostKeyError, InconclusiveError

AGENT = "device_agent.py"
DEVICE_INFO = "device_info.py"  # the device's facts, and its conditions before each measurement
_LOST = 255  # ssh's exit status for its own failures: connection refused, lost, auth
_HOST_KEY_SIGNS = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                   "host key is known for", "No matching host key")


def _tail(text: str, n: int = 5) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _ssh_reason(stderr: str) -> str:
    """ssh's own one-line reason (the last line it wrote that is not a warning banner)."""
    lines = [ln.strip() for ln in stderr.replace("\r", "").splitlines()
             if ln.strip() and not ln.startswith(("Warning: Permanently added", "@@@"))]
    return lines[-1] if lines else "ssh failed without saying why"


class SshTransport:
    """remote.Transport on the system ssh client (see the module's docstring)."""

    kind = "ssh"

    def __init__(self, cfg: SshTarget, note: Callable[[str], None] = lambda s: None):
        self.cfg = cfg
        self.name = cfg.host
        self.note = note
        self.python = cfg.python
        self.workdir = cfg.workdir
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.run_dir = posixpath.join(cfg.workdir, "edgedistill-run-" + self.run_id)
        self.facts: dict = {}  # what the agent said when ready: python, machine, holder
        self._private = tempfile.mkdtemp(prefix="edgedistill-ssh-")  # the master's socket
        self._hold: subprocess.Popen | None = None
        self._hold_err = Path(self._private) / "hold.stderr"
        self._lost: str | None = None
        self._modules: dict[str, bool] = {}

    # ------------------------------------------------------------ the ssh command line

    def _options(self) -> list[str]:
        c = self.cfg
        opts = []
        if c.config is not None:
            opts += ["-F", str(c.config)]
        if c.port is not None:
            opts += ["-p", str(c.port)]
        for k, v in (("BatchMode", "yes"), ("ConnectTimeout", c.connect_timeout_s),
                     ("ServerAliveInterval", c.alive_interval_s), ("ServerAliveCountMax", c.alive_count_max),
                     ("StrictHostKeyChecking", "yes"), ("ControlMaster", "auto"),
                     ("ControlPath", os.path.join(self._private, "master")),
                     ("ControlPersist", "60")):
            opts += ["-o", f"{k}={v}"]
        return opts

    def _ssh(self, remote_argv: list[str] | str) -> list[str]:
        """ssh argv running `remote_argv` on the device, every argument quoted for its shell."""
        command = remote_argv if isinstance(remote_argv, str) else shlex.join(remote_argv)
        return ["ssh", *self._options(), self.cfg.host, "--", command]

    @property
    def lost_bound_s(self) -> float:
        """How long a dead link can go unnoticed by ssh's keepalives."""
        return self.cfg.alive_interval_s * self.cfg.alive_count_max

    # ------------------------------------------------------------ opening

    def open(self) -> None:
        if shutil.which("ssh") is None:
            raise InconclusiveError("the ssh runner needs the OpenSSH client (ssh) on this machine; none on PATH",
                                    hint="install openssh-client")
        self._connect()
        self._start_hold()
        self.put([(PROBE_DIR / f, posixpath.join(self.run_dir, "probe", f))
                  for f in (*PROBE_FILES, AGENT, DEVICE_INFO)])

    def _connect(self) -> None:
        """The master connection, with no remote command: a host key problem ends here, before
        anything ran on the device."""
        err = Path(self._private) / "master.stderr"
        with open(err, "wb") as f:  # a file, not a pipe: the backgrounded master keeps it open
            done = subprocess.run(["ssh", *self._options(), "-M", "-N", "-f", self.cfg.host],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                  timeout=self.cfg.connect_timeout_s * 3 + 30, check=False)
        stderr = err.read_text(errors="replace")
        if done.returncode == 0:
            return
        if any(sign in stderr for sign in _HOST_KEY_SIGNS):
            host, port = self._resolved()
            fingerprint = next((ln.strip().rstrip(".") for ln in stderr.splitlines()
                                if ln.strip().startswith("SHA256:")), None)
            entry = host if port == "22" else f"[{host}]:{port}"  # how known_hosts names it
            changed = "CHANGED" in stderr
            raise HostKeyError(
                f"ssh refused {self.cfg.host} ({host} port {port}): its host key is "
                f"{'not the one pinned in known_hosts' if changed else 'not in known_hosts'}"
                f"{f' (it offered {fingerprint})' if fingerprint else ''}; nothing was run on it",
                hint=(f"check the key's fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
                      f"then pin it: ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts"
                      f"{' (after removing the old line: ssh-keygen -R ' + shlex.quote(entry) + ')' if changed else ''}"
                      ", or name a known_hosts file with UserKnownHostsFile in the [ssh] config file"))
        raise InconclusiveError(f"cannot reach {self.cfg.host} over ssh: {_ssh_reason(stderr)}",
                                hint="check `ssh " + " ".join(shlex.quote(a) for a in [
                                    *(["-F", str(self.cfg.config)] if self.cfg.config else []),
                                    *(["-p", str(self.cfg.port)] if self.cfg.port else []), self.cfg.host]) +
                                     " true` from this machine")

    def _resolved(self) -> tuple[str, str]:
        """The host name and port ssh would connect to (`ssh -G`: the config applied, no connection)."""
        done = subprocess.run(["ssh", *self._options(), "-G", self.cfg.host], capture_output=True, text=True,
                              timeout=30, check=False)
        values = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
        return values.get("hostname", self.cfg.host), values.get("port", "22")

    def _start_hold(self) -> None:
        """The session that holds the device lock and the run folder for the whole run."""
        source = (PROBE_DIR / AGENT).read_text()
        client = {"client_host": socket.gethostname(), "client_pid": os.getpid(), "client_user": getpass.getuser(),
                  "ci_job": os.environ.get("CI_JOB_ID") or os.environ.get("GITHUB_RUN_ID")}
        argv = [self.python, "-c", source, "hold", self.workdir, self.run_id, f"{self.cfg.lock_wait_s:g}",
                json.dumps(client)]
        with open(self._hold_err, "wb") as err:  # the child keeps its own copy
            self._hold = subprocess.Popen(self._ssh(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        lines: queue.Queue = queue.Queue()

        def read():
            for raw in self._hold.stdout:
                lines.put(raw.decode(errors="replace").strip())
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + self.cfg.lock_wait_s + self.cfg.connect_timeout_s + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # the session ended (or never answered) without a ready line
                self._abandon_hold()
                self._close_master()
                stderr = self._hold_err.read_text(errors="replace")
                raise InconclusiveError(
                    f"could not start the device agent on {self.cfg.host} with {self.python!r}: "
                    f"{_tail(stderr, 2) or 'no answer'}",
                    hint="the device needs Python >= 3.8 ([ssh] python names it)")
            kind, _, payload = line.partition(" ")
            if kind == "EDGEDISTILL-WAIT":
                self.note(f"{self.cfg.host}: busy ({_who(payload)}); waiting up to {self.cfg.lock_wait_s:g} s")
            elif kind == "EDGEDISTILL-BUSY":
                self._abandon_hold()
                self._close_master()
                raise InconclusiveError(
                    f"{self.cfg.host} stayed busy for {self.cfg.lock_wait_s:g} s: held by {_who(payload)}",
                    hint="another job is measuring on the device; raise [ssh] lock_wait_s to queue longer")
            elif kind == "EDGEDISTILL-READY":
                self.facts = json.loads(payload)
                if self.facts.get("cleaned"):
                    self.note(f"{self.cfg.host}: removed {self.facts['cleaned']} folder(s) of killed runs")
                return

    def _abandon_hold(self) -> None:
        if self._hold is None:
            return
        try:
            self._hold.stdin.close()
        except OSError:
            pass
        try:
            self._hold.wait(timeout=self.lost_bound_s + 10)
        except subprocess.TimeoutExpired:
            self._hold.kill()
            self._hold.wait()
        self._hold = None

    # ------------------------------------------------------------ the Transport protocol

    def _check(self) -> None:
        if self._lost:
            raise DeviceLost(self._lost)
        if self._hold is not None and self._hold.poll() is not None:
            self._lost = f"the session holding {self.cfg.host} ended ({_tail(self._hold_err.read_text(errors='replace'), 1) or 'link dropped'})"
            raise DeviceLost(self._lost)

    def _call(self, remote: list[str] | str, *, stdin=None, timeout: float, what: str) -> subprocess.CompletedProcess:
        self._check()
        try:
            # No input: /dev/null, never this process's stdin (a mux client forwards it to the device).
            done = run_group(self._ssh(remote), input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._lost = f"{what}: no answer within {timeout:g} s".lstrip(": ")
            raise DeviceLost(self._lost) from None
        if done.returncode == _LOST:
            said = done.stderr.decode(errors="replace").strip()
            self._lost = (f"{what}: " if what else "") + (_ssh_reason(said) if said else (
                f"the connection closed (ssh exit 255: no answer to keepalives for "
                f"{self.cfg.alive_interval_s} s x {self.cfg.alive_count_max}, or the device went away)"))
            raise DeviceLost(self._lost)
        return done

    def _transfer_timeout(self, nbytes: int) -> float:
        return self.cfg.connect_timeout_s + self.lost_bound_s + 60 + nbytes / 1e6  # >= 1 MB/s

    def put(self, pairs: list[tuple[Path, str]]) -> None:
        """One tar stream into the run folder (every device path of a run lies under it)."""
        if not pairs:
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for local, remote in pairs:
                rel = posixpath.relpath(remote, self.run_dir)
                if rel.startswith("../"):
                    raise ValueError(f"{remote} is outside the run folder {self.run_dir}")
                tar.add(str(local), arcname=rel, recursive=False)
        data = buf.getvalue()
        done = self._call(["tar", "-x", "-m", "-f", "-", "-C", self.run_dir], stdin=data,
                          timeout=self._transfer_timeout(len(data)), what="copying files to the device")
        if done.returncode != 0:
            raise DeviceLost(f"copying files to {self.cfg.host} failed: {_tail(done.stderr.decode(errors='replace'), 2)}")

    def get(self, remote: str, local: Path) -> bool:
        script = f"test -f {shlex.quote(remote)} || exit 3; exec cat -- {shlex.quote(remote)}"
        done = self._call(script, timeout=self._transfer_timeout(0) + 600, what=f"fetching {posixpath.basename(remote)}")
        if done.returncode == 3:
            return False
        if done.returncode != 0:
            raise DeviceLost(f"reading {remote} on {self.cfg.host} failed: {_tail(done.stderr.decode(errors='replace'), 2)}")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(done.stdout)
        return True

    def program(self, command: ProbeCommand | None, request: dict, request_path: str) -> list[str]:
        if command is not None:  # remote.RemoteRunner.probe_command gives only the Python probe
            raise ValueError("the ssh runner runs the Python probe only")
        return [self.python, posixpath.join(self.run_dir, "probe", "probe.py"), request_path]

    def execute(self, argv: list[str], *, cwd: str, env: dict[str, str], timeout_s: float) -> Execution:
        agent = [self.python, posixpath.join(self.run_dir, "probe", AGENT), "run", self.run_dir, f"{timeout_s:g}", "--"]
        script = (f"mkdir -p {shlex.quote(cwd)} && cd {shlex.quote(cwd)} && exec "
                  + shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *agent, *argv]))
        try:
            done = self._call(script, timeout=timeout_s + self.lost_bound_s + self.cfg.connect_timeout_s + 30,
                              what="")  # run_probe says "during the probe"
        except DeviceLost as e:
            return Execution("lost", None, str(e))
        stderr = _tail(done.stderr.decode(errors="replace"))
        marker = next((ln for ln in reversed(done.stdout.decode(errors="replace").splitlines())
                       if ln.startswith("EDGEDISTILL-")), "")
        if marker == "EDGEDISTILL-TIMEOUT":
            return Execution("timeout", None, stderr)
        if marker.startswith("EDGEDISTILL-EXIT "):
            return Execution("exited", int(marker.split()[1]), stderr)
        # No marker: the agent itself died (killed on the device) or never started.
        self._check()
        return Execution("lost", None, f"the device agent ended without an exit marker (ssh {done.returncode}): {stderr}")

    def modules(self, names: list[str]) -> dict[str, bool]:
        """Which of these modules the device's Python can import (cached for the run)."""
        missing = [n for n in names if n not in self._modules]
        if missing:
            done = self._call([self.python, posixpath.join(self.run_dir, "probe", AGENT), "modules", *missing],
                              timeout=self._transfer_timeout(0), what="checking the device's Python")
            line = next((ln for ln in done.stdout.decode(errors="replace").splitlines()
                         if ln.startswith("EDGEDISTILL-MODULES ")), None)
            if line is None:
                raise DeviceLost(f"the device agent did not answer: {_tail(done.stderr.decode(errors='replace'), 2)}")
            self._modules.update(json.loads(line.split(" ", 1)[1]))
        return {n: self._modules[n] for n in names}

    def engine(self, onnx: Path, files: list[Path], precision: str) -> dict:
        """A TensorRT engine for `onnx` (and the files it reads) built on the device by its
        trtexec, cached there across runs (device_agent.py `engine`); the facts, with `path`."""
        folder = posixpath.join(self.run_dir, "trt", hashlib.sha256(str(onnx.resolve()).encode()).hexdigest()[:16])
        self.put([(f, posixpath.join(folder, f.name)) for f in {onnx, *files}])
        done = self._call([self.python, posixpath.join(self.run_dir, "probe", AGENT), "engine", self.workdir,
                           posixpath.join(folder, onnx.name), precision, self.cfg.trtexec],
                          timeout=3600, what="building the TensorRT engine")  # minutes on a Jetson
        line = next((ln for ln in done.stdout.decode(errors="replace").splitlines()
                     if ln.startswith("EDGEDISTILL-ENGINE ")), None)
        if line is None:
            raise DeviceLost(f"the device agent did not answer: {_tail(done.stderr.decode(errors='replace'), 2)}")
        return json.loads(line.split(" ", 1)[1])

    def _json(self, argv: list[str], what: str) -> dict:
        done = self._call(argv, timeout=self._transfer_timeout(0), what=what)
        try:
            return json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceLost(f"{what} on {self.cfg.host} gave no JSON: {_tail(done.stderr.decode(errors='replace'), 2)}") from None

    def conditions(self) -> dict:
        probe = posixpath.join(self.run_dir, "probe")
        return self._json([self.python, posixpath.join(probe, DEVICE_INFO), "--conditions"], "device_info.py --conditions")

    def device_info(self) -> dict:
        probe = posixpath.join(self.run_dir, "probe")
        return self._json([self.python, posixpath.join(probe, DEVICE_INFO)], "device_info.py")

    # ------------------------------------------------------------ closing

    def _close_master(self) -> None:
        subprocess.run(["ssh", *self._options(), "-O", "exit", self.cfg.host], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30, check=False)

    def close(self) -> None:
        """End the hold session (the agent kills what is left, removes the run folder and
        releases the lock), then the master connection."""
        try:
            self._abandon_hold()
        finally:
            self._close_master()
            shutil.rmtree(self._private, ignore_errors=True)


def _who(payload: str) -> str:
    try:
        h = json.loads(payload)
    except ValueError:
        h = {}
    if not h:
        return "another job (it has not said who)"
    who = f"pid {h.get('pid')} of {h.get('user')}@{h.get('host')} since {h.get('since')}"
    if h.get("client_host"):
        who += f", started from {h.get('client_user')}@{h['client_host']} (pid {h.get('client_pid')})"
    return who + (f", CI job {h['ci_job']}" if h.get("ci_job") else "")


def _wants_engine(request: dict) -> bool:
    """A TensorRT measurement of an ONNX file: the engine is built on the device, never taken
    from this machine (an engine runs only on the GPU and TensorRT version that built it)."""
    return request.get("backend") == "tensorrt" and str(request.get("model", "")).endswith(".onnx")


class SshRunner(RemoteRunner):
    """A device over SSH: the Runner protocol (runners/__init__.py) on an SshTransport."""

    transport: SshTransport

    @classmethod
    def open(cls, target: TargetConfig, note: Callable[[str], None] = lambda s: None) -> SshRunner:
        transport = SshTransport(target.ssh, note)
        try:
            transport.open()
        except DeviceLost as e:
            transport.close()
            raise InconclusiveError(f"lost {target.ssh.host} while setting up the run: {e}") from None
        except BaseException:
            transport.close()
            raise
        return cls(transport)

    def probe_command(self, backend, executorch_runtime, note=lambda s: None):
        command, record = super().probe_command(backend, executorch_runtime, note)
        facts = self.transport.facts
        return command, {**record, "python": facts.get("python"), "device_host": facts.get("hostname"),
                         "machine": facts.get("machine")}

    def __init__(self, transport: SshTransport):
        super().__init__(transport)
        self._engines: dict[tuple[str, str], dict] = {}  # (onnx path here, precision) -> the device's engine

    def run_probe(self, request: dict, *, threads: int, timeout_s: float,
                  command: ProbeCommand | None = None) -> ProbeOutcome:
        missing = self._missing_modules(request["backend"])
        if missing:
            return ProbeOutcome("error", {"ok": False, "error_type": "RuntimeMissing", "error": missing}, missing)
        if _wants_engine(request):
            try:
                built = self.engine_for(request)
            except DeviceLost as e:
                return ProbeOutcome("lost", None, f"lost the link to {self.transport.name}: {e}")
            if built.get("error"):
                detail = f"TensorRT engine not built on {self.transport.name}: {built['error']}"
                return ProbeOutcome("error", {"ok": False, "error_type": "EngineBuildFailed", "error": detail}, detail)
        return super().run_probe(request, threads=threads, timeout_s=timeout_s, command=command)

    def engine_for(self, request: dict) -> dict:
        """The device's engine for a TensorRT request naming the verified ONNX (built once per
        run, cached on the device across runs)."""
        key = (request["model"], request.get("precision") or "fp32")
        if key not in self._engines:
            files = [Path(f) for f in request.get("model_files") or []]
            facts = self.transport.engine(Path(request["model"]), files, key[1])
            if not facts.get("error"):
                how = "from the device's cache" if facts["cached"] else f"built in {facts['build_s']:g} s"
                self.transport.note(f"{self.transport.name}: TensorRT engine {how} ({facts['trt']}, {facts['gpu']})")
            self._engines[key] = facts
        return self._engines[key]

    def _model_paths(self, request: dict, pending: list) -> str:
        if _wants_engine(request):  # the engine is already on the device: nothing to upload
            return self._engines[(request["model"], request.get("precision") or "fp32")]["path"]
        return super()._model_paths(request, pending)

    def _missing_modules(self, backend: str) -> str | None:
        """What the probe needs that the device's Python lacks, as the line to act on; None: nothing."""
        from edgedistill.probe.runtimes import _DISTRIBUTIONS, RUNTIME_MODULE

        module = RUNTIME_MODULE[backend].split(".")[0]
        try:
            found = self.transport.modules(["numpy", module])
        except DeviceLost:
            return None  # the probe itself will report the lost link
        missing = [("numpy", "numpy")] if not found["numpy"] else []
        if not found[module]:
            missing.append((module, _DISTRIBUTIONS[backend][0]))
        if not missing:
            return None
        py = self.transport.facts.get("python") or "?"
        jetpack = (" (on a Jetson, TensorRT's Python bindings come with JetPack: "
                   "`sudo apt-get install python3-libnvinfer`)" if any(m == "tensorrt" for m, _ in missing) else "")
        return (f"{' and '.join(m for m, _ in missing)} not importable by {self.transport.python} (Python {py}) "
                f"on {self.transport.name}: run `{self.transport.python} -m pip install "
                f"{' '.join(d for _, d in missing)}` on the device{jetpack}")

    def device_info(self) -> dict:
        return self.transport.device_info()
