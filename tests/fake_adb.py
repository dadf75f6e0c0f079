"""A fake `adb` client: a phone that is a sandbox folder on this host.

No phone is reachable from CI, so the adb runner's tests put this first on PATH (`install`
writes an `adb` wrapper that runs this file). It implements the client's command line as
edgedistill uses it (`adb devices`, `adb [-s SERIAL] get-state | push LOCAL REMOTE | pull REMOTE
LOCAL | shell CMD...`) with adb's own output and error messages, and runs `shell` commands with
this host's `sh` inside `<home>/phone/`, which stands for the phone's filesystem root: every
absolute `/data/...`, `/sys/...` and `/proc/...` in a command or a push/pull path is mapped into
it. The phone's `/sys` and `/proc/loadavg` are copied from tests/fixtures/devices/<device>/, and
its `dumpsys`, `getprop` and `taskset` are small programs in `<home>/phone/system/bin/`
(first on the shell's PATH): `dumpsys thermalservice` and `getprop` answer from the recorded
fixtures; `taskset MASK CMD` records the mask (this host's cores are not the phone's) and runs
CMD. The programs it runs are real: the host build of the native ExecuTorch runner runs here as
it would on the phone.

`<home>/control.json` says how the phone misbehaves (read at every call, so a test can change it
mid-run):
    devices            [[serial, state], ...]  what `adb devices` lists (state "device", "offline")
    thermal_statuses   [int, ...]  successive `dumpsys thermalservice` reads (the last repeats)
    offline_at_probe   N: the Nth probe command (one with the exit marker and `timeout`) finds
                       the phone gone: "error: device offline", exit 1, and every later call
                       "error: device 'SERIAL' not found"
    drop_marker        true: the `EDGEDISTILL-EXIT:` lines are dropped from a probe command's output
                       (an old adb shell that loses the command's end)
    always_zero        true: `adb shell` exits 0 whatever the command did (adb before Android 7)
    crash_after_run    true: the probe program "crashes" (SIGSEGV) after it finished
Every shell command is appended to <home>/shell.log (one JSON string per line); masks to taskset.log.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "devices"
_DEVICE_PATH = re.compile(r"(?<![\w./-])/(data|sys|proc)(?=/|\b)")


# ---------------------------------------------------------------- set-up (used by the tests)


def install(home: Path, device: str = "pixel6", serial: str = "FA6X01234", **control) -> Path:
    """A phone recorded as `device` under `home`; returns the folder to put first on PATH."""
    phone = home / "phone"
    shutil.copytree(FIXTURES / device / "sys", phone / "sys")
    shutil.copytree(FIXTURES / device / "proc", phone / "proc")
    (phone / "data" / "local" / "tmp").mkdir(parents=True)
    tools = phone / "system" / "bin"
    tools.mkdir(parents=True)
    me, py = Path(__file__).resolve(), sys.executable  # -S: stdlib only, a third of the start-up time
    for name in ("dumpsys", "getprop"):
        _script(tools / name, f'exec {py} -S {me} --{name} "$@"\n')
    _script(tools / "taskset", (
        "# toybox taskset MASK CMD...: the phone pins CMD to MASK's cores; this host's cores are\n"
        "# not the phone's, so the mask is recorded and CMD runs unpinned.\n"
        'echo "$1" >> "$FAKE_ADB_HOME/taskset.log"\nshift\n"$@"\nrc=$?\n'
        'if [ -n "$FAKE_ADB_CRASH_AFTER_RUN" ]; then kill -SEGV $$; fi\nexit $rc\n'))
    bin_dir = home / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "adb", f'FAKE_ADB_HOME={home} exec {py} -S {me} "$@"\n')
    (home / "device.txt").write_text(device)
    configure(home, devices=[[serial, "device"]], **control)
    (home / "state.json").write_text("{}")
    return bin_dir


def configure(home: Path, **control) -> None:
    path = home / "control.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**current, **control}))


def shell_log(home: Path) -> list[str]:
    path = home / "shell.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


# ---------------------------------------------------------------- the client


class _State:
    """state.json under a lock: two adb clients (two jobs) may run at once."""

    def __init__(self, home: Path):
        self.file = open(home / "state.json", "r+")  # noqa: SIM115 -- closed in __exit__
        fcntl.flock(self.file, fcntl.LOCK_EX)
        self.data = json.loads(self.file.read() or "{}")

    def __enter__(self):
        return self.data

    def __exit__(self, *exc):
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps(self.data))
        self.file.close()


def _fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def _map(home: Path, text: str) -> str:
    return _DEVICE_PATH.sub(lambda m: f"{home / 'phone'}/{m.group(1)}", text)


def main(argv: list[str]) -> int:
    home = Path(os.environ["FAKE_ADB_HOME"])
    if argv and argv[0] == "--dumpsys":
        return _dumpsys(home, argv[1:])
    if argv and argv[0] == "--getprop":
        return _getprop(home, argv[1:])
    control = json.loads((home / "control.json").read_text())
    serial = None
    while argv and argv[0] in ("-s", "-d", "-e"):
        serial, argv = (argv[1], argv[2:]) if argv[0] == "-s" else (None, argv[1:])
    if not argv:
        return _fail("adb: usage: no command specified")
    command, args = argv[0], argv[1:]
    with _State(home) as state:
        offline = state.get("offline", False)
    devices = [(s, "offline" if offline else st) for s, st in control["devices"]]
    if command == "devices":
        print("List of devices attached")
        for s, st in devices if not state.get("gone") else []:
            print(f"{s}\t{st}")
        print()
        return 0
    listed = dict(devices)
    if serial is None:
        if len(listed) != 1:
            return _fail("error: more than one device/emulator" if listed else "error: no devices/emulators found")
        serial = next(iter(listed))
    if serial not in listed or state.get("gone"):
        return _fail(f"error: device '{serial}' not found")
    if listed[serial] == "offline":
        return _fail("error: device offline")
    if command == "get-state":
        print("device")
        return 0
    if command == "push" and len(args) >= 2:
        *sources, target = args
        for local in map(Path, sources):
            if not local.is_file():
                return _fail(f"adb: error: cannot stat '{local}': No such file or directory")
        folder = Path(_map(home, target))
        # As adb's do_sync_push: several files go only into an existing folder; one file to a
        # path has its missing parent folders made by adbd.
        if len(sources) > 1 and not folder.is_dir():
            return _fail(f"adb: error: target '{target}' is not a directory")
        for local in map(Path, sources):
            remote = folder / local.name if folder.is_dir() else folder
            remote.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, remote)
            os.chmod(remote, 0o755 if os.access(local, os.X_OK) else 0o644)
        print(f"{len(sources)} file(s) pushed, 0 skipped.")
        return 0
    if command == "pull" and len(args) == 2:
        remote, local = Path(_map(home, args[0])), Path(args[1])
        if not remote.is_file():
            return _fail(f"adb: error: failed to stat remote object '{args[0]}': No such file or directory")
        shutil.copyfile(remote, local)
        print(f"{args[0]}: 1 file pulled, 0 skipped.")
        return 0
    if command == "shell" and args:
        return _shell(home, control, serial, " ".join(args))  # adb joins its arguments with spaces
    return _fail(f"adb: unknown command {command}")


def _shell(home: Path, control: dict, serial: str, script: str) -> int:
    with open(home / "shell.log", "a") as log:
        log.write(json.dumps(script) + "\n")
    if "EDGEDISTILL-EXIT:" in script and "timeout -s KILL" in script:
        with _State(home) as state:
            state["probes"] = state.get("probes", 0) + 1
            if control.get("offline_at_probe") == state["probes"]:
                state["offline"] = state["gone"] = True
                return _fail("error: device offline")
    env = {**os.environ, "FAKE_ADB_HOME": str(home),
           "PATH": f"{home / 'phone' / 'system' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if control.get("crash_after_run"):
        env["FAKE_ADB_CRASH_AFTER_RUN"] = "1"
    # A phone's programs print any bytes (a model's garbage name in an error line): passed on, as adb does.
    out = subprocess.run(["sh", "-c", _map(home, script)], cwd=home / "phone", env=env,
                         capture_output=True, text=True, errors="replace", check=False)
    stdout = out.stdout
    if control.get("drop_marker") and "timeout -s KILL" in script:  # a probe's command
        stdout = "".join(line for line in stdout.splitlines(keepends=True) if "EDGEDISTILL-EXIT:" not in line)
    sys.stdout.write(stdout)
    sys.stderr.write(out.stderr)
    return 0 if control.get("always_zero") else out.returncode


def _dumpsys(home: Path, args: list[str]) -> int:
    if args[:1] != ["thermalservice"]:
        print(f"Can't find service: {' '.join(args)}")
        return 0
    control = json.loads((home / "control.json").read_text())
    text = (FIXTURES / (home / "device.txt").read_text() / "dumpsys-thermalservice.txt").read_text()
    statuses = control.get("thermal_statuses") or [0]
    with _State(home) as state:
        i = state.get("thermal_reads", 0)
        state["thermal_reads"] = i + 1
    status = statuses[min(i, len(statuses) - 1)]
    sys.stdout.write(re.sub(r"^Thermal Status: \d+$", f"Thermal Status: {status}", text, flags=re.MULTILINE))
    return 0


def _getprop(home: Path, args: list[str]) -> int:
    text = (FIXTURES / (home / "device.txt").read_text() / "getprop.txt").read_text()
    if not args:
        sys.stdout.write(text)
        return 0
    props = dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]$", text, re.MULTILINE))
    print(props.get(args[0], ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
