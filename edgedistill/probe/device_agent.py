"""The device side of the SSH runner: holds the device, runs probes under a timeout, cleans up.

Standard library only, Python >= 3.8 (JetPack 5). The host starts it over ssh; nothing of
edgedistill is installed on the device.

    python device_agent.py hold WORKDIR RUN_ID LOCK_WAIT_S [CLIENT_JSON]
        Take the device lock WORKDIR/edgedistill-device.lock (flock; wait at most LOCK_WAIT_S,
        printing `EDGEDISTILL-WAIT <holder json>` once, then `EDGEDISTILL-BUSY <holder json>` and
        exit when it stays taken). Holding it: clean what killed runs left, make the run folder
        WORKDIR/edgedistill-run-RUN_ID/ with its own flocked `.lock`, print
        `EDGEDISTILL-READY <facts json>`, then block reading stdin. EOF on stdin (the host closed
        the session, or the link dropped and sshd went away) ends the run: its recorded process
        groups are killed, its folder removed, the locks released by exiting.
    python device_agent.py run RUN_DIR TIMEOUT_S -- ARGV...
        Start ARGV in a new session, record its process group in RUN_DIR, kill the group after
        TIMEOUT_S; print `EDGEDISTILL-EXIT <code>` or `EDGEDISTILL-TIMEOUT`. The host trusts only
        this marker: ssh's own exit status also reports a dropped link (255).
    python device_agent.py clean WORKDIR
        Every edgedistill-run-* folder whose `.lock` nobody holds (a killed run's): kill its
        recorded process groups, remove it. Prints `EDGEDISTILL-CLEANED <n>`.
    python device_agent.py modules NAME...
        `EDGEDISTILL-MODULES <json>`: which of the modules this Python can import (not imported).
    python device_agent.py engine WORKDIR ONNX PRECISION TRTEXEC
        A TensorRT engine for ONNX built here by `TRTEXEC --onnx=... --saveEngine=...` (--fp16 /
        --int8 per PRECISION), cached as WORKDIR/edgedistill-engines/<sha256 of the ONNX and its files>-<TensorRT
        version>-<GPU>.engine: an engine runs only on the GPU model and TensorRT version that
        built it. Prints `EDGEDISTILL-ENGINE <json>` (path, cached, trt, gpu, build_s).
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import glob
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

LOCK_NAME = "edgedistill-device.lock"
RUN_PREFIX = "edgedistill-run-"
GROUPS_PREFIX = "pgid-"  # RUN_DIR/pgid-<pgid>: "<pgid> <leader start time>" of a running probe


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _start_time(pid: int):
    """The process's start time in clock ticks since boot (Linux), to tell a recorded group
    from a later one that reused its id; None where /proc is not there."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_recorded_groups(run_dir: str) -> None:
    for path in glob.glob(os.path.join(run_dir, GROUPS_PREFIX + "*")):
        try:
            with open(path) as f:
                pgid_text, _, started = f.read().strip().partition(" ")
            pgid = int(pgid_text)
        except (OSError, ValueError):
            continue
        # Only the group we started: a leader with another start time is a reused id.
        now = _start_time(pgid)
        if now is None or not started or now == started:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.unlink(path)
        except OSError:
            pass


def _try_lock(path: str):
    """An open file holding an exclusive flock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


def clean(workdir: str) -> int:
    """Remove every run folder whose lock nobody holds, after killing its recorded groups."""
    cleaned = 0
    for run_dir in sorted(glob.glob(os.path.join(workdir, RUN_PREFIX + "*"))):
        lock = os.path.join(run_dir, ".lock")
        if not os.path.isdir(run_dir):
            continue
        fd = _try_lock(lock) if os.path.exists(lock) else -1
        if fd is None:
            continue  # a live run holds it
        try:
            _kill_recorded_groups(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
            cleaned += 1
        finally:
            if fd >= 0:
                os.close(fd)
    return cleaned


def hold(workdir: str, run_id: str, lock_wait_s: float, client: dict) -> int:
    os.makedirs(workdir, exist_ok=True)
    lock_path = os.path.join(workdir, LOCK_NAME)
    deadline = time.monotonic() + lock_wait_s
    said_wait = False
    while True:
        fd = _try_lock(lock_path)
        if fd is not None:
            break
        holder = _holder(lock_path)
        if time.monotonic() >= deadline:
            _say("EDGEDISTILL-BUSY " + json.dumps(holder))
            return 0
        if not said_wait and holder:
            _say("EDGEDISTILL-WAIT " + json.dumps(holder))
            said_wait = True
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    # Who holds the device, for the next job that finds it taken: this agent (pid, user here)
    # and the machine that started it (its host name, pid, CI job id: CLIENT_JSON).
    ci_job = os.environ.get("CI_JOB_ID") or os.environ.get("GITHUB_RUN_ID")
    me = {"host": socket.gethostname(), "pid": os.getpid(), "user": getpass.getuser(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": run_id}
    me.update({k: v for k, v in client.items() if v is not None})
    if ci_job and not me.get("ci_job"):
        me["ci_job"] = ci_job
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    cleaned = clean(workdir)
    # The folder appears under its final name with its lock already held, so a concurrent
    # clean never takes a run being made for a stale one.
    run_dir = os.path.join(workdir, RUN_PREFIX + run_id)
    making = os.path.join(workdir, ".making-" + run_id)
    os.makedirs(making)
    run_fd = _try_lock(os.path.join(making, ".lock"))
    os.rename(making, run_dir)
    facts = {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
             "hostname": socket.gethostname(), "run_dir": run_dir, "cleaned": cleaned, "holder": me}
    _say("EDGEDISTILL-READY " + json.dumps(facts))
    try:
        while sys.stdin.buffer.read(65536):
            pass  # the host sends nothing; EOF is the end of the run
    finally:
        _kill_recorded_groups(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        os.close(run_fd)
        os.close(fd)
    return 0


def run(run_dir: str, timeout_s: float, argv: list) -> int:
    def start_clock():
        # In the child, just before the exec: the probe's "process start" on this clock.
        os.setsid()
        os.environ["EDGEDISTILL_PARENT_START_WALL_NS"] = str(time.time_ns())

    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            preexec_fn=start_clock)
    record = os.path.join(run_dir, GROUPS_PREFIX + str(proc.pid))
    with open(record, "w") as f:
        f.write("%d %s" % (proc.pid, _start_time(proc.pid) or ""))
    marker = None
    try:
        code = proc.wait(timeout=timeout_s)
        marker = "EDGEDISTILL-EXIT %d" % code
    except subprocess.TimeoutExpired:
        marker = "EDGEDISTILL-TIMEOUT"
    finally:
        # Also after a normal exit: a grandchild the probe left is in the same group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        try:
            os.unlink(record)
        except OSError:
            pass
    _say(marker)
    return 0


def modules(names: list) -> dict:
    import importlib.util

    found = {}
    for name in names:
        try:
            found[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    return found


ENGINES = "edgedistill-engines"
# JetPack installs trtexec here, off PATH.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text.strip())[:60] or "unknown"


def _trt_version(trtexec: str) -> str:
    """TensorRT's version as trtexec's banner says it (`[TensorRT v100300]`), else the module's."""
    import re

    try:
        out = subprocess.run([trtexec, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = re.search(r"TensorRT v(\d+)", out)
    if found:
        return "v" + found.group(1)
    try:
        import tensorrt  # noqa: F401 - only for its version

        return tensorrt.__version__
    except ImportError:
        return "unknown"


def _gpu_name() -> str:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, universal_newlines=True, timeout=30).stdout.strip()
            if out:
                return out.splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    model = _read("/proc/device-tree/model")  # a Jetson: its integrated GPU goes with the module
    return model.rstrip("\0") if model else "unknown-gpu"


def engine(workdir: str, onnx: str, precision: str, trtexec: str) -> dict:
    import hashlib

    tool = shutil.which(trtexec) or (JETPACK_TRTEXEC if trtexec == "trtexec" and os.access(JETPACK_TRTEXEC, os.X_OK)
                                     else None)
    if tool is None:
        return {"error": "no trtexec %r on the device (JetPack: %s)" % (trtexec, JETPACK_TRTEXEC)}
    # The ONNX and every file uploaded beside it (its external data): what the engine is built from.
    digest = hashlib.sha256()
    folder_of_onnx = os.path.dirname(os.path.abspath(onnx))
    for name in sorted(os.listdir(folder_of_onnx)):
        path = os.path.join(folder_of_onnx, name)
        if not os.path.isfile(path):
            continue
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    trt, gpu = _trt_version(tool), _gpu_name()
    folder = os.path.join(workdir, ENGINES)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "%s-%s-%s-%s.engine" % (digest.hexdigest(), _safe(trt), _safe(gpu), precision))
    facts = {"path": path, "cached": os.path.exists(path), "trt": trt, "gpu": gpu, "build_s": 0.0, "trtexec": tool}
    if facts["cached"]:
        return facts
    tmp = "%s.%d.tmp" % (path, os.getpid())
    argv = [tool, "--onnx=" + onnx, "--saveEngine=" + tmp, *PRECISION_FLAGS[precision]]
    t0 = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    facts["build_s"] = round(time.monotonic() - t0, 2)
    if done.returncode != 0 or not os.path.exists(tmp):
        if os.path.exists(tmp):
            os.unlink(tmp)
        tail = " | ".join(done.stdout.strip().splitlines()[-3:])
        return {**facts, "error": "trtexec exited %d: %s" % (done.returncode, tail)}
    os.replace(tmp, path)  # whole or absent: a killed build never leaves a half engine cached
    return facts


def _read(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def main(argv: list) -> int:
    if len(argv) in (4, 5) and argv[0] == "hold":
        return hold(argv[1], argv[2], float(argv[3]), json.loads(argv[4]) if len(argv) == 5 else {})
    if len(argv) >= 5 and argv[0] == "run" and argv[3] == "--":
        return run(argv[1], float(argv[2]), argv[4:])
    if len(argv) == 2 and argv[0] == "clean":
        _say("EDGEDISTILL-CLEANED %d" % clean(argv[1]))
        return 0
    if argv and argv[0] == "modules":
        _say("EDGEDISTILL-MODULES " + json.dumps(modules(argv[1:])))
        return 0
    if len(argv) == 5 and argv[0] == "engine" and argv[3] in PRECISION_FLAGS:
        _say("EDGEDISTILL-ENGINE " + json.dumps(engine(*argv[1:])))
        return 0
    sys.stderr.write("usage: device_agent.py hold|run|clean|modules|engine ... (got %r)\n" % (argv,))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
