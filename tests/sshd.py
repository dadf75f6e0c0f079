"""A real OpenSSH server on 127.0.0.1 for the SSH runner's tests (FIELD-NOTES: a simulated device).

`sshd -f CONFIG -D -e` with a host key, a client key and a pinned known_hosts made here, and an
ssh_config naming the device by an alias, as a user's ~/.ssh/config or a CI job's -F file would.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ALIAS = "edgedev"
DEVICE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-device" / "bin" / "python"  # the venv's, not its base


def here_with_the_device_python():
    """A local runner whose probes run under the device venv's interpreter and runtime: the
    same model measured here and through SSH then differs by the transport alone."""
    from edgedistill.bench.runners.local import PROBE_DIR, LocalRunner, PythonProbe

    class DevicePython(PythonProbe):
        def argv(self, request, request_path):
            return [str(DEVICE_PYTHON), str(PROBE_DIR / "probe.py"), str(request_path)]

    class HereWithTheDevicePython(LocalRunner):
        def probe_command(self, backend, executorch_runtime, note=lambda s: None):
            return DevicePython(), {"kind": "python"}

    return HereWithTheDevicePython()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_path() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.path.exists(p)), None)


def why_missing() -> str | None:
    """Why the tests cannot start an sshd here (None: they can)."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client (ssh, ssh-keygen) is not installed (apt-get install openssh-client)"
    if sshd_path() is None:
        return ("OpenSSH's sshd is not installed and could not be (python3 dev.py test installs "
                "openssh-server as root with apt-get)")
    return None


class Sshd:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def start(self) -> Sshd:
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        self._keygen(f / "host_key")
        self._keygen(f / "other_host_key")  # what a replaced device (or an impostor) would offer
        self._keygen(f / "client_key")
        shutil.copy(f / "client_key.pub", f / "authorized_keys")
        host_pub = (f / "host_key.pub").read_text().split()
        (f / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (f / "wrong_known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {' '.join((f / 'other_host_key.pub').read_text().split()[:2])}\n")
        (f / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {f / 'host_key'}\n"
            f"AuthorizedKeysFile {f / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            f"UsePAM no\nStrictModes no\nPidFile {f / 'sshd.pid'}\nMaxSessions 30\nMaxStartups 30\n"
            "LogLevel ERROR\n")
        self.write_client_config("ssh_config", "known_hosts")
        self.write_client_config("wrong_ssh_config", "wrong_known_hosts")
        self.write_client_config("unknown_ssh_config", "empty_known_hosts")
        (f / "empty_known_hosts").write_text("")
        os.makedirs("/run/sshd", exist_ok=True)
        log = open(f / "sshd.log", "wb")
        self.proc = subprocess.Popen([sshd_path(), "-f", str(f / "sshd_config"), "-D", "-e"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(f / 'sshd.log').read_text()[-2000:]}")

    def write_client_config(self, name: str, known_hosts: str) -> Path:
        path = self.folder / name
        path.write_text(
            f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.folder / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.folder / known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n")
        return path

    @property
    def config(self) -> Path:
        return self.folder / "ssh_config"

    def session_pids(self) -> list[int]:
        """The sshd processes serving connections (every descendant of the listener that is
        sshd itself, not the commands it runs)."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
        rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
        children: dict[int, list[tuple[int, str]]] = {}
        for pid, ppid, comm in rows:
            children.setdefault(int(ppid), []).append((int(pid), comm))
        found, todo = [], [self.proc.pid]
        while todo:
            for pid, comm in children.get(todo.pop(), []):
                if comm.startswith("sshd"):
                    found.append(pid)
                    todo.append(pid)
        return found

    def signal_sessions(self, sig: int) -> list[int]:
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> None:
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
