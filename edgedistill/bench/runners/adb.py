"""An Android phone through the adb client: the native ExecuTorch runner and LiteRT's benchmark_model pushed to it.

A phone has no Python, so every measurement is a native program: ExecuTorch's through the native
runner (`edgedistill/probe/native/`, cross-built for arm64 with the NDK: README), driven with the
flags `native.NativeCommand` builds for a local run; LiteRT's (`.tflite`) through LiteRT's own
`benchmark_model` (`[adb] benchmark_model`, Google's prebuilt Android binary), whose log
bench/benchmark_model.py turns into the result schema. What this module adds on top of
`remote.RemoteRunner`:

- real adb command semantics: `adb -s SERIAL push|pull|shell|get-state`; a shell command is one
  string whose every argument is `shlex.quote`d (the device's shell is mksh: POSIX quoting);
- the exit status from an explicit marker (`echo EDGEDISTILL-EXIT:$?`): adb before Android 7
  returns 0 whatever the command did, and some shells drop the status; a missing marker is a
  lost status ("lost", inconclusive), never a pass;
- each probe pinned with `taskset` to the cores with the highest maximum frequency (cpufreq's
  `cpuinfo_max_freq`): on big.LITTLE a probe the scheduler puts on a little core runs 2-3x slower;
- before each measurement the thermal status (`dumpsys thermalservice`: PowerManager's
  THERMAL_STATUS_* 0-6) and the thermal zones are read; above `max_thermal_status` the run waits
  for the phone to cool (bounded by `max_cool_down_s`), records how long, and a measurement that
  still starts hot is recorded so (`thermal_hot`: the gate's `thermal_throttling` problem);
- the device's lock: `mkdir <workdir>/lock` is atomic on the device, so two jobs never measure
  one phone at once; its owner file says who holds it (host, pid, start, CI job) and a deadline
  on the device's clock, renewed before every probe: a lock past its deadline was left by a
  killed run and is taken over. The run folders killed runs left (`run-*`) are removed at open;
  close removes this run's folder and the lock;
- adb's "device offline" / "device 'X' not found" (exit 1) at any point is `DeviceLost`: the
  probe is "lost" (inconclusive), what was measured before is kept.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from edgedistill.bench.native import NativeBuild, NativeCommand, _sha256
from edgedistill.bench.runners.local import ProbeCommand, ProbeOutcome, run_group
from edgedistill.bench.runners.remote import DeviceLost, Execution, RemoteRunner, thread_vars
from edgedistill.errors import InconclusiveError, UsageError

MARKER = "EDGEDISTILL-EXIT:"
RUNNER_NAME = "executorch_runner"
CALL_TIMEOUT_S = 60.0  # one adb call that is not a probe (push, pull, a short shell command)
PROBE_SLACK_S = 30.0  # the host waits this much longer than the device-side timeout
LOCK_GRACE_S = 300.0  # a lock's deadline: the next probe's timeout plus this, renewed per probe
LOCK_POLL_S = 1.0  # one adb call a second while another job holds the phone
TOOL_HINT = ("download Google's prebuilt benchmark_model for Android arm64 (LiteRT docs, \"Performance "
             "measurement\": android_aarch64_benchmark_model) and set [adb] benchmark_model = "
             "\"path/to/benchmark_model\"")
# The ELF machine (binary_arch) a program needs on each Android ABI (ro.product.cpu.abi).
ABI_ARCH = {"arm64-v8a": "aarch64", "armeabi-v7a": "arm", "x86_64": "x86-64", "x86": "x86"}
CROSS_BUILD_HINT = ("cross-build the native ExecuTorch runner for arm64 with the Android NDK "
                    "(README: \"The native ExecuTorch runner, and cross-building it\") and set "
                    "[adb] executorch_runner = \"build-android/executorch_runner\"")
# What adb prints when the phone is gone (unplugged, rebooted, adbd restarted, USB reset).
_LOST = re.compile(r"device offline|device '[^']*' not found|no devices/emulators found|device unauthorized"
                   r"|device still authorizing|error: closed|protocol fault|connection reset|"
                   r"failed to connect|cannot connect", re.IGNORECASE)
_THERMAL_STATUS = re.compile(r"^\s*Thermal Status:\s*(-?\d+)", re.MULTILINE)
THERMAL_NAMES = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


def q(value: object) -> str:
    return shlex.quote(str(value))


def _ci_job() -> str | None:
    """The CI job this run belongs to, as the lock's owner file names it."""
    if os.environ.get("GITHUB_RUN_ID"):
        return "github:{}/{}#{}".format(os.environ.get("GITHUB_REPOSITORY", "?"), os.environ["GITHUB_RUN_ID"],
                                        os.environ.get("GITHUB_JOB", "?"))
    for var in ("CI_JOB_ID", "BUILD_TAG", "BUILDKITE_JOB_ID", "CIRCLE_WORKFLOW_JOB_ID"):
        if os.environ.get(var):
            return f"{var}={os.environ[var]}"
    return None


def big_core_mask(max_khz: dict[int, int], threads: int = 1) -> tuple[int, list[int]]:
    """The taskset mask of the fastest cores: those with the highest maximum frequency, widened
    to the next tier down while they are fewer than `threads` (each thread a core of its own)."""
    if not max_khz:
        return 0, []
    tiers = sorted(set(max_khz.values()), reverse=True)
    chosen: list[int] = []
    for tier in tiers:
        chosen += sorted(c for c, f in max_khz.items() if f == tier)
        if len(chosen) >= threads:
            break
    return sum(1 << c for c in chosen), sorted(chosen)


def parse_facts(text: str) -> dict:
    """The `@key ...` lines FACTS_SCRIPT prints, as numbers and names."""
    facts: dict = {"max_khz": {}, "min_khz": {}, "governors": {}, "zones": [], "thermal_status": None,
                   "load": None, "online": None}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "@loadavg":
            try:
                facts["load"] = [float(x) for x in rest.split()[:3]]
            except ValueError:
                pass
        elif key == "@online":
            facts["online"] = rest.strip() or None
        elif key in ("@maxfreq", "@minfreq", "@gov"):
            path, _, value = rest.partition(" ")
            m = re.search(r"cpu(\d+)/cpufreq/", path)
            if not m or not value.strip():
                continue
            if key in ("@maxfreq", "@minfreq") and value.strip().isdigit():
                facts["max_khz" if key == "@maxfreq" else "min_khz"][int(m.group(1))] = int(value.strip())
            elif key == "@gov":
                facts["governors"][int(m.group(1))] = value.strip()
        elif key == "@zone":
            parts = rest.split()
            # path, type, temperature in millidegrees (a zone whose sensor errors has no number)
            if len(parts) >= 3 and re.fullmatch(r"-?\d+", parts[-1]):
                n = re.search(r"thermal_zone(\d+)$", parts[0])
                facts["zones"].append((int(n.group(1)) if n else 0, {"zone": " ".join(parts[1:-1]),
                                                                     "celsius": int(parts[-1]) / 1000}))
        elif key == "@thermal":
            m = _THERMAL_STATUS.search(rest)
            facts["thermal_status"] = int(m.group(1)) if m else None
    facts["zones"] = [z for _, z in sorted(facts["zones"], key=lambda nz: nz[0])]  # zone 10 after zone 9
    return facts


def _mhz(khz: int | None) -> int | None:
    return round(khz / 1000) if khz is not None else None


def _count_online(online: str | None, fallback: int) -> int:
    """Cores in /sys/devices/system/cpu/online ("0-7", "0-3,6")."""
    if not online:
        return fallback
    n = 0
    for part in online.split(","):
        lo, _, hi = part.partition("-")
        try:
            n += int(hi or lo) - int(lo) + 1
        except ValueError:
            return fallback
    return n


THERMAL_SCRIPT = 'echo "@thermal $(dumpsys thermalservice 2>/dev/null | grep \'Thermal Status:\')"'
# One shell call for every fact conditions() and device_info() need; each line tagged.
CPU = "/sys/devices/system/cpu"
FACTS_SCRIPT = "; ".join([
    'echo "@loadavg $(cat /proc/loadavg 2>/dev/null)"',
    f'echo "@online $(cat {CPU}/online 2>/dev/null)"',
    f'for f in {CPU}/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do echo "@maxfreq $f $(cat $f 2>/dev/null)"; done',
    f'for f in {CPU}/cpu[0-9]*/cpufreq/cpuinfo_min_freq; do echo "@minfreq $f $(cat $f 2>/dev/null)"; done',
    f'for f in {CPU}/cpu[0-9]*/cpufreq/scaling_governor; do echo "@gov $f $(cat $f 2>/dev/null)"; done',
    'for z in /sys/class/thermal/thermal_zone*; do '
    'echo "@zone $z $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done',
    THERMAL_SCRIPT,
])
PROPS = ("ro.product.manufacturer", "ro.product.model", "ro.soc.manufacturer", "ro.soc.model",
         "ro.board.platform", "ro.product.cpu.abi", "ro.build.version.release", "ro.build.version.sdk",
         "ro.build.fingerprint")


PROPS_SCRIPT = "; ".join(f'echo "@prop {p}=$(getprop {p})"' for p in PROPS)


def parse_props(text: str) -> dict:
    props = {}
    for line in text.splitlines():
        if line.startswith("@prop "):
            key, _, value = line[6:].partition("=")
            if key in PROPS:
                props[key] = value.strip() or None
    return props


class AdbTransport:
    """remote.Transport over the adb client, for one phone (`serial`)."""

    kind = "adb"

    def __init__(self, adb: str, serial: str, workdir: str, note: Callable[[str], None] = lambda s: None):
        self.adb, self.serial, self.name = adb, serial, serial
        self.workdir = workdir.rstrip("/") or "/"
        self.run_id = "{}-{}-{}".format(datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S"), os.getpid(),
                                        uuid.uuid4().hex[:6])
        self.run_dir = posixpath.join(self.workdir, f"run-{self.run_id}")
        self.lock_dir = posixpath.join(self.workdir, "lock")
        self.note = note
        self.mask: int | None = None  # the taskset mask of the next probe (None: not pinned)
        self.holds_lock = False
        self.last_execution: Execution | None = None  # the last probe's, for the runner's signal check
        self.made: set[str] = set()  # device folders known to exist (made by this run)
        self.clock_ns = True  # the device's `date +%s%N` gives nanoseconds (checked at prepare)
        self.last_output: subprocess.CompletedProcess | None = None  # the last probe's adb shell call

    # ------------------------------------------------------------ adb itself

    def call(self, args: list[str], *, timeout_s: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess:
        """`adb -s SERIAL ARGS`; DeviceLost when the phone is gone or stops answering."""
        try:
            # Its own process group, listed in LIVE_GROUPS: an interrupt ends it from any thread.
            done = run_group([self.adb, "-s", self.serial, *args], timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise DeviceLost(f"adb {args[0]} did not answer within {timeout_s:g} s") from e
        out = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                          done.stderr.decode(errors="replace"))
        if out.returncode != 0 and _LOST.search(out.stderr + out.stdout):
            raise DeviceLost(_last_line(out.stderr or out.stdout))
        return out

    def shell(self, script: str, *, timeout_s: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess:
        """One shell command line on the device (adb joins its arguments into one string anyway:
        passing one string, quoted here, is what runs there)."""
        return self.call(["shell", script], timeout_s=timeout_s)

    def checked(self, script: str, what: str) -> str:
        """A shell command that must succeed (its own marker: adb's status may be 0 regardless)."""
        out = self.shell(f"{script}; echo {MARKER}$?")
        code = _marker(out.stdout)
        if code is None:
            raise DeviceLost(f"{what}: the device's shell returned no exit status")
        if code != 0:
            raise DeviceLost(f"{what} failed on {self.serial} (exit {code}): {_last_line(out.stderr)}")
        return out.stdout

    # ------------------------------------------------------------ Transport

    def put(self, pairs: list[tuple[Path, str]]) -> None:
        """adb push, one call per device folder. adbd makes a single file's missing parent
        folders itself, but several files go only into a folder that exists: made first."""
        groups: dict[str, list[Path]] = {}
        for local, remote in pairs:
            if posixpath.basename(remote) == local.name:
                groups.setdefault(posixpath.dirname(remote), []).append(local)
            else:
                self._push([local], remote)
        missing = sorted(d for d, files in groups.items() if len(files) > 1 and d not in self.made)
        if missing:
            self.checked("mkdir -p " + " ".join(map(q, missing)), "making the run's folders")
            self.made.update(missing)
        for folder, files in groups.items():
            if len(files) > 1:
                self._push(files, folder + "/")
            else:
                self._push(files, posixpath.join(folder, files[0].name))

    def _push(self, files: list[Path], remote: str) -> None:
        size = sum(f.stat().st_size for f in files)
        out = self.call(["push", *map(str, files), remote], timeout_s=CALL_TIMEOUT_S + size / 5e6)  # 5 MB/s: USB 2
        if out.returncode != 0:
            raise DeviceLost(f"adb push {', '.join(f.name for f in files)} failed: "
                             f"{_last_line(out.stderr or out.stdout)}")

    def get(self, remote: str, local: Path) -> bool:
        local.parent.mkdir(parents=True, exist_ok=True)
        out = self.call(["pull", remote, str(local)])
        return out.returncode == 0 and local.exists()

    def program(self, command: ProbeCommand | None, request: dict, request_path: str) -> list[str]:
        if command is None:
            raise UsageError("the adb runner has no Python probe (a phone has no Python)",
                             "measure ExecuTorch (.pte) artifacts with the native runner")
        return command.argv(request, Path(request_path))

    def execute(self, argv: list[str], *, cwd: str, env: dict[str, str], timeout_s: float) -> Execution:
        """argv in its own process group under `timeout -s KILL` (the whole group), pinned to the
        big cores, with the device's wall clock just before it starts; the status from the marker."""
        assigns = " ".join(f"{k}={q(v)}" for k, v in sorted(env.items()))
        pin = f"taskset {self.mask:x} " if self.mask else ""
        launched = "EDGEDISTILL_PARENT_START_WALL_NS=$(date +%s%N) " if self.clock_ns else ""
        line = (f"cd {q(cwd)} && {assigns} {launched}"
                f"{pin}timeout -s KILL {timeout_s:g} {' '.join(map(q, argv))}; echo {MARKER}$?")
        self.last_execution = run = self._execute(line, timeout_s)
        return run

    def _execute(self, line: str, timeout_s: float) -> Execution:
        began = time.monotonic()
        self.last_output = None
        try:
            out = self.shell(line, timeout_s=timeout_s + PROBE_SLACK_S)
        except DeviceLost as e:
            return Execution("lost", None, str(e))
        self.last_output = out  # a tool that prints its measurement (benchmark_model) is read from it
        elapsed = time.monotonic() - began
        code = _marker(out.stdout)
        if code is None:
            # adb said nothing about the command's end: it may have crashed, been killed, or
            # finished; its result file cannot be trusted to be the whole story.
            return Execution("lost", None, f"no exit status from the device (adb exit {out.returncode}; "
                                           f"the {MARKER} marker is missing): {_last_line(out.stderr)}")
        if code in (124, 137) and elapsed >= timeout_s * 0.95:  # toybox's timeout: 124; GNU's with KILL: 137
            return Execution("timeout", code, _last_line(out.stderr))
        # A shell reports a command killed by signal N as 128 + N: as a local run, a signal.
        returncode = -(code - 128) if 128 < code < 160 else code
        return Execution("exited", returncode, _last_line(out.stderr))

    def facts(self) -> dict:
        out = self.shell(FACTS_SCRIPT)
        return parse_facts(out.stdout)

    def thermal_status(self) -> int | None:
        return parse_facts(self.shell(THERMAL_SCRIPT).stdout)["thermal_status"]

    def conditions(self) -> dict:
        facts = self.facts()
        return {"load_average_before": facts["load"],
                "usable_cores": _count_online(facts["online"], len(facts["max_khz"]) or 1),
                "governor": _governor(facts), "thermal": facts["zones"] or None,
                "thermal_status": facts["thermal_status"]}

    # ------------------------------------------------------------ the lock

    def owner(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "run": self.run_id,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "ci_job": _ci_job()}

    def acquire(self, wait_s: float, hold_s: float) -> None:
        """Take `<workdir>/lock` (mkdir is atomic), waiting up to `wait_s` for its holder;
        a lock past the deadline its holder wrote is taken over."""
        lock, w = q(self.lock_dir), q(self.workdir)
        owner = q(json.dumps(self.owner()))
        deadline = f"echo $(( $(date +%s) + {math.ceil(hold_s)} )) > {lock}/deadline"
        script = (f"mkdir -p {w} || exit 3; if mkdir {lock} 2>/dev/null; then "
                  f"printf '%s\\n' {owner} > {lock}/owner && {deadline} && echo LOCK:acquired; "
                  f"else echo \"LOCK:busy $(date +%s) $(cat {lock}/deadline 2>/dev/null)\"; "
                  f"cat {lock}/owner 2>/dev/null; fi")
        began, missing_deadline = time.monotonic(), 0
        waited_noted = False
        while True:
            out = self.shell(script).stdout
            first, _, holder = out.partition("\n")
            if first.startswith("LOCK:acquired"):
                self.holds_lock = True
                return
            if not first.startswith("LOCK:busy"):
                raise InconclusiveError(f"cannot make the lock {self.lock_dir} on {self.serial}: "
                                        f"{_last_line(out) or 'no answer'}",
                                        f"check that [adb] workdir ({self.workdir}) is writable by the shell user")
            fields = first.split()
            now = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
            held_until = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None
            missing_deadline = missing_deadline + 1 if held_until is None else 0
            # Past its deadline (the holder was killed), or no deadline on two looks a poll apart
            # (a holder writes it right after its mkdir): stale, taken over.
            if (now is not None and held_until is not None and now > held_until) or missing_deadline >= 2:
                self.note(f"{self.serial}: taking over a stale lock ({_holder(holder)}, deadline "
                          f"{'none' if held_until is None else _ago(now, held_until)})")
                stale = q(f"{self.lock_dir}.stale-{self.run_id}")
                self.shell(f"mv {lock} {stale} 2>/dev/null; rm -rf {stale}")
                continue
            waited = time.monotonic() - began
            if waited >= wait_s:
                raise InconclusiveError(
                    f"{self.serial} is busy: {_holder(holder)} holds {self.lock_dir} (waited {waited:.0f} s)",
                    "another job is measuring this phone; run again later or raise [adb] lock_wait_s")
            if not waited_noted:
                self.note(f"{self.serial}: waiting up to {wait_s:g} s for the device's lock ({_holder(holder)})")
                waited_noted = True
            time.sleep(min(LOCK_POLL_S, max(0.05, wait_s - waited)))

    def renew_and_read_thermal(self, hold_s: float, make: str) -> int | None:
        """Before a probe, in one call: move the lock's deadline on, make the probe's folder
        (`make`), and read the thermal status."""
        renew = (f"[ -d {q(self.lock_dir)} ] && echo $(( $(date +%s) + {math.ceil(hold_s)} )) "
                 f"> {q(self.lock_dir)}/deadline; " if self.holds_lock else "")
        out = self.shell(f"{renew}mkdir -p {q(make)} && echo @made; {THERMAL_SCRIPT}").stdout
        if "@made" in out.splitlines():
            self.made.add(make)
        return parse_facts(out)["thermal_status"]

    def prepare(self) -> tuple[list[str], dict, dict]:
        """Once the lock is ours: remove the run folders killed runs left (no live run owns one
        now), make this run's, and read the phone's facts and properties; one call."""
        clean = (f"for d in {q(self.workdir)}/run-*; do [ -d \"$d\" ] && [ \"$d\" != {q(self.run_dir)} ] "
                 f"&& rm -rf \"$d\" && echo \"@cleaned $d\"; done; mkdir -p {q(self.run_dir)}")
        out = self.shell("; ".join([clean, FACTS_SCRIPT, PROPS_SCRIPT, 'echo "@clock $(date +%s%N)"']))
        clock = next((line.split(" ", 1)[-1] for line in out.stdout.splitlines() if line.startswith("@clock")), "")
        # toybox's date before %N support prints "1700000000N": a launch time in seconds would
        # make process start nonsense, so without nanoseconds it is not measured at all.
        self.clock_ns = clock.isdigit() and len(clock) >= 18
        cleaned = [posixpath.basename(line.split(" ", 1)[1]) for line in out.stdout.splitlines()
                   if line.startswith("@cleaned ")]
        return cleaned, parse_facts(out.stdout), parse_props(out.stdout)

    def close(self) -> None:
        """Remove the run folder and release the lock (ours only: the owner file names this run)."""
        release = (f"; grep -q {q(self.run_id)} {q(self.lock_dir)}/owner 2>/dev/null && rm -rf {q(self.lock_dir)}"
                   if self.holds_lock else "")
        try:
            self.shell(f"rm -rf {q(self.run_dir)}{release}")
            self.holds_lock = False
        except DeviceLost as e:
            self.note(f"{self.serial}: could not clean up ({e}); the next run removes the folder, "
                      "and the lock is stale after its deadline")


def _marker(stdout: str) -> int | None:
    codes = re.findall(rf"^{MARKER}(-?\d+)\s*$", stdout, re.MULTILINE)
    return int(codes[-1]) if codes else None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _holder(owner_text: str) -> str:
    try:
        o = json.loads(owner_text.strip().splitlines()[0])
    except (ValueError, IndexError):
        return "an unknown holder (no owner file)"
    job = f", CI job {o['ci_job']}" if o.get("ci_job") else ""
    return f"pid {o.get('pid')} on {o.get('host')} since {o.get('started')}{job}"


def _ago(now: int | None, deadline: int) -> str:
    return f"passed {now - deadline} s ago" if now is not None else str(deadline)


def _governor(facts: dict) -> str | None:
    """The governor of the fastest core (a phone's policies can differ per cluster)."""
    if not facts["governors"]:
        return None
    fastest = max(facts["max_khz"], key=facts["max_khz"].get) if facts["max_khz"] else min(facts["governors"])
    return facts["governors"].get(fastest) or next(iter(facts["governors"].values()))


_ELF_MACHINES = {0x3E: "x86-64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}


def binary_arch(path: Path) -> str | None:
    """The CPU an ELF binary is built for (its header's e_machine), or None when it is not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], "little" if head[5] == 1 else "big"), "unknown")


def _devices(adb: str) -> list[tuple[str, str]]:
    """(serial, state) of every device `adb devices` lists."""
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False)
    except FileNotFoundError as e:
        raise UsageError(f"the adb client {adb!r} was not found",
                         "install Android platform-tools (Debian: apt-get install adb) or set [adb] adb") from e
    except subprocess.TimeoutExpired as e:
        raise InconclusiveError(f"`{adb} devices` did not answer within {CALL_TIMEOUT_S:g} s",
                                "restart the adb server (adb kill-server)") from e
    found = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            found.append((parts[0], parts[1]))
    return found


def _check_tool(target: str, configured) -> Path | None:
    """The local copy of benchmark_model `[adb] benchmark_model` names: a file that is a program
    (an ELF binary, or a script: a stand-in), else a usage error saying what was found."""
    if configured is None:
        return None
    tool = Path(configured).expanduser()
    if not tool.is_file():
        raise UsageError(f"target {target}: [adb] benchmark_model {tool} does not exist", TOOL_HINT)
    try:
        with open(tool, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UsageError(f"target {target}: [adb] benchmark_model {tool} cannot be read: {e.strerror}", TOOL_HINT) from e
    if head != b"\x7fELF" and not head.startswith(b"#!"):
        raise UsageError(f"target {target}: [adb] benchmark_model {tool} is not a program (expected an ELF "
                         f"binary, found {len(head)} bytes starting {head!r})", TOOL_HINT)
    return tool


class AdbCommand(NativeCommand):
    """The native runner's command line with the binary at its path on the phone."""

    def __init__(self, device_binary: str, record: dict):
        super().__init__(NativeBuild(Path(device_binary), record, reused=True))

    def argv(self, request: dict, request_path: Path) -> list[str]:
        argv = super().argv(request, request_path)
        argv[0] = str(self.native.binary.as_posix())
        return argv


class AdbRunner(RemoteRunner):
    """A phone over adb: runners.Runner, measurements by the pushed native runner."""

    def __init__(self, transport: AdbTransport, settings, timeout_s: float, note: Callable[[str], None]):
        super().__init__(transport)
        self.transport: AdbTransport = transport
        self.settings = settings
        self.timeout_s = timeout_s
        self.note = note
        self.max_khz: dict[int, int] = {}
        self.device_runner: str | None = None
        self.record: dict = {}
        self.tool: str | None = None  # benchmark_model's path on the phone (None: not configured)
        self.tool_record: dict = {}
        self._conditions: dict | None = None  # the current artifact's, updated by each probe's thermal check

    @classmethod
    def open(cls, target, note: Callable[[str], None] = lambda s: None) -> AdbRunner:
        s = target.adb
        if target.executorch_runtime == "python":
            raise UsageError(f"target {target.name}: executorch_runtime = \"python\" cannot run over adb "
                             "(a phone has no Python)", "remove it: the adb runner measures with the native runner")
        if s.executorch_runner is None and ("executorch" in target.backends or s.benchmark_model is None):
            raise UsageError(f"target {target.name}: [adb] executorch_runner is not set (the native ExecuTorch "
                             "runner built for the phone)", CROSS_BUILD_HINT)
        binary = Path(s.executorch_runner).expanduser() if s.executorch_runner is not None else None
        if binary is not None and not binary.is_file():
            raise UsageError(f"target {target.name}: [adb] executorch_runner {binary} does not exist", CROSS_BUILD_HINT)
        if "litert" in target.backends and s.benchmark_model is None:
            raise UsageError(f"target {target.name}: [adb] benchmark_model is not set (LiteRT's benchmark tool "
                             "built for the phone: the adb runner measures .tflite models with it)", TOOL_HINT)
        tool = _check_tool(target.name, s.benchmark_model)
        adb = shutil.which(s.adb)
        if adb is None:
            raise UsageError(f"target {target.name}: the adb client {s.adb!r} was not found",
                             "install Android platform-tools (Debian: apt-get install adb) or set [adb] adb")
        serial = s.serial or cls._only_device(adb)
        transport = AdbTransport(adb, serial, s.workdir, note)
        try:
            state = transport.call(["get-state"])
        except DeviceLost as e:
            raise InconclusiveError(f"adb device {serial} is not reachable: {e}",
                                    "check the cable and `adb devices`; accept the USB debugging prompt") from e
        if state.returncode != 0 or state.stdout.strip() != "device":
            raise InconclusiveError(f"adb device {serial} is not ready: "
                                    f"{state.stdout.strip() or _last_line(state.stderr) or 'no state'}",
                                    "check `adb devices`: the phone must be listed as 'device'")
        runner = cls(transport, s, target.measurement.timeout_s, note)
        try:
            transport.acquire(s.lock_wait_s, runner.timeout_s + LOCK_GRACE_S)
            cleaned, facts, props = transport.prepare()
            if cleaned:
                note(f"{serial}: removed {len(cleaned)} run folder(s) killed runs left: {', '.join(cleaned)}")
            if not transport.clock_ns:
                note(f"{serial}: the phone's `date +%s%N` gives no nanoseconds: process start "
                     "(interpreter_ms) is not measured, the rest of the cold start is")
            runner.max_khz = facts["max_khz"]
            abi = props.get("ro.product.cpu.abi")
            if tool is not None and binary_arch(tool) not in (None, ABI_ARCH.get(abi, binary_arch(tool))):
                raise UsageError(f"target {target.name}: [adb] benchmark_model {tool} is built for "
                                 f"{binary_arch(tool)}, the phone {serial} is {abi}", TOOL_HINT)
            programs = []
            if binary is not None:
                runner.device_runner = posixpath.join(transport.run_dir, RUNNER_NAME)
                programs.append((binary, runner.device_runner))
            if tool is not None:  # under its own name, as the user's copy is called
                runner.tool = posixpath.join(transport.run_dir, "bin", tool.name)
                programs.append((tool, runner.tool))
            transport.put(programs)
            transport.checked("chmod 755 " + " ".join(q(remote) for _, remote in programs),
                              "making the runner executable")
        except DeviceLost as e:
            runner.close()
            raise InconclusiveError(f"lost adb device {serial} while preparing it: {e}",
                                    "check the cable and `adb devices`") from e
        except BaseException:
            runner.close()
            raise
        if tool is not None:
            runner.tool_record = {"kind": "benchmark_model", "device": "adb", "binary": str(tool),
                                  "binary_sha256": _sha256(tool), "binary_arch": binary_arch(tool)}
        if binary is None:
            return runner
        runner.record = {"kind": "native", "device": "adb", "binary": str(binary),
                         "binary_sha256": _sha256(binary), "binary_arch": binary_arch(binary)}
        if abi == "arm64-v8a" and runner.record["binary_arch"] != "aarch64":
            note(f"{serial}: warning: [adb] executorch_runner is built for {runner.record['binary_arch']}, "
                 f"the phone is {abi}")
        return runner

    @staticmethod
    def _only_device(adb: str) -> str:
        found = _devices(adb)
        ready = [serial for serial, state in found if state == "device"]
        if len(ready) == 1:
            return ready[0]
        listed = ", ".join(f"{serial} ({state})" for serial, state in found) or "none"
        raise UsageError(f"[adb] has no serial and `adb devices` lists {len(ready)} ready devices (found: {listed})",
                         "set [adb] serial = \"...\" to the phone to measure" if ready else
                         "connect one phone with USB debugging on, or set [adb] serial")

    # ------------------------------------------------------------ the protocol

    def probe_command(self, backend: str, executorch_runtime: str, note=lambda s: None):
        if backend == "litert":  # measured whole by benchmark_model (own_tool), never by a probe
            raise UsageError("the adb runner measures LiteRT (.tflite) with benchmark_model; [adb] benchmark_model "
                             "is not set", TOOL_HINT)
        if backend != "executorch" or self.device_runner is None:
            raise UsageError(f"the adb runner measures ExecuTorch (.pte) with the native runner and LiteRT (.tflite) "
                             f"with benchmark_model; this artifact is {backend}",
                             "list only \"executorch\" and \"litert\" in the adb target's backends"
                             if backend != "executorch" else CROSS_BUILD_HINT)
        return AdbCommand(self.device_runner, self.record), dict(self.record)

    def own_tool(self, backend: str):
        """The device tool that measures an artifact of `backend` whole, instead of probes (the
        harness calls it with the artifact, target, eval set, work folder, record and on_step):
        LiteRT's benchmark_model when it is configured, else None."""
        if backend != "litert" or self.tool is None:
            return None
        from edgedistill.bench import benchmark_model

        return lambda *args, **kwargs: benchmark_model.measure(self, *args, **kwargs)

    def run_tool(self, artifact, argv_for: Callable[[str], list[str]], *, threads: int, timeout_s: float) -> dict:
        """One run of a device tool on `artifact` as a probe runs: the lock renewed, the phone
        cooled down (bounded), the model's files pushed once per run, the command pinned to the
        big cores under `timeout -s KILL`. `argv_for(model path on the phone)` is its command line.
        Returns {"status", "returncode", "detail", "stdout", "stderr", "argv", "mask"}."""
        probe_dir = posixpath.join(self.transport.run_dir, f"p{self._probes + 1}")
        failed = {"returncode": None, "stdout": "", "stderr": "", "argv": None, "mask": None}
        try:
            cool = self.cool_down(self.transport.renew_and_read_thermal(timeout_s + LOCK_GRACE_S, probe_dir))
        except DeviceLost as e:
            return {**failed, "status": "lost", "detail": f"lost the link to {self.transport.serial}: {e}"}
        self._probes += 1
        self._count_cool_down(cool)
        pending: list[tuple[Path, str]] = []
        model = self._model_paths({"model": str(Path(artifact.path).resolve()),
                                   "model_files": [str(Path(f).resolve()) for f in artifact.files()]}, pending)
        argv = argv_for(model)
        mask = self.mask_for(threads)[0] or None
        self.transport.mask = mask
        try:
            self.transport.put(pending)
            run = self.transport.execute(argv, cwd=probe_dir, env=thread_vars(threads), timeout_s=timeout_s)
        except DeviceLost as e:
            return {**failed, "status": "lost", "detail": f"lost the link to {self.transport.serial}: {e}"}
        out = self.transport.last_output
        stdout = "".join(line for line in (out.stdout if out else "").splitlines(keepends=True)
                         if not line.startswith(MARKER))
        detail = f"lost the link to {self.transport.serial} during the run: {run.detail}" if run.status == "lost" \
            else run.detail
        return {"status": run.status, "returncode": run.returncode, "detail": detail, "stdout": stdout,
                "stderr": out.stderr if out else "", "argv": argv, "mask": f"{mask:x}" if mask else None}

    def _count_cool_down(self, cool: dict) -> None:
        """Add a measurement's own cool-down to the artifact's conditions (see conditions())."""
        if self._conditions is not None and cool["status"] is not None:
            c = self._conditions
            c["cool_down_s"] = round((c.get("cool_down_s") or 0.0) + cool["waited_s"], 2)
            c["thermal_hot"] = bool(c.get("thermal_hot")) or cool["hot"]
            c["thermal_status_max"] = max(c.get("thermal_status_max") or 0, cool["status"])

    def mask_for(self, threads: int) -> tuple[int, list[int]]:
        return big_core_mask(self.max_khz, threads) if self.settings.big_cores_only else (0, [])

    def cool_down(self, status: int | None) -> dict:
        """Wait (bounded) while the thermal status (`status`, just read) is above the limit,
        reading it again every poll; what was seen and how long it waited."""
        limit, budget = self.settings.max_thermal_status, self.settings.max_cool_down_s
        began = time.monotonic()
        poll = min(5.0, max(0.2, budget / 10))
        while status is not None and status > limit and time.monotonic() - began < budget:
            time.sleep(min(poll, max(0.0, budget - (time.monotonic() - began))))
            status = self.transport.thermal_status()
        waited = round(time.monotonic() - began, 2) if status is not None else 0.0
        return {"status": status, "waited_s": waited, "hot": status is not None and status > limit}

    def conditions(self) -> dict:
        """The phone's state before an artifact's measurements, after cooling down (bounded).

        The dict is kept and updated by every probe's own thermal check (`cool_down_s` adds up,
        `thermal_hot` becomes true when any measurement started above the limit): the record
        the harness keeps then says how the whole artifact was measured."""
        try:
            c = self.transport.conditions()
            cool = self.cool_down(c["thermal_status"])
            if cool["waited_s"]:
                c = self.transport.conditions()  # the zones and load after the wait
        except DeviceLost as e:  # the probe that follows reports it as "lost"
            self._conditions = {"load_average_before": None, "usable_cores": None, "governor": None,
                                "thermal": None, "error": f"lost the device reading its state: {e}"}
            return self._conditions
        mask, cores = self.mask_for(1)
        c.update(thermal_status=cool["status"], thermal_limit=self.settings.max_thermal_status,
                 cool_down_s=cool["waited_s"], thermal_hot=cool["hot"], thermal_status_max=cool["status"],
                 big_core_mask=f"{mask:x}" if mask else None, big_cores=cores or None,
                 max_freq_khz={str(k): v for k, v in sorted(self.max_khz.items())} or None)
        self._conditions = c
        return c

    def device_info(self) -> dict:
        """The phone, in probe/device_info.py's shape (what `targets probe` prints) plus what
        only a phone has: its serial, Android release and SDK, SoC, ABI and thermal status."""
        try:
            out = self.transport.shell(f"{FACTS_SCRIPT}; {PROPS_SCRIPT}").stdout
        except DeviceLost as e:
            raise InconclusiveError(f"lost adb device {self.transport.serial} while describing it: {e}",
                                    "check the cable and `adb devices`") from e
        facts, props = parse_facts(out), parse_props(out)
        mask, big = self.mask_for(1)
        n = _count_online(facts["online"], len(facts["max_khz"]))
        cores = [{"cpu": c, "online": True, "min_mhz": _mhz(facts["min_khz"].get(c)), "max_mhz": _mhz(f),
                  "governor": facts["governors"].get(c)} for c, f in sorted(facts["max_khz"].items())]
        maker, model = props.get("ro.product.manufacturer"), props.get("ro.product.model")
        android, sdk = props.get("ro.build.version.release"), props.get("ro.build.version.sdk")
        return {"device_info_version": 1, "hostname": None,
                "platform": f"Android {android or '?'} (SDK {sdk or '?'})", "machine": props.get("ro.product.cpu.abi"),
                "board": " ".join(x for x in (maker, model) if x) or None, "os": f"Android {android or '?'}",
                "python": None,  # a phone has none: the native runner measures
                "cpu": {"model": props.get("ro.soc.model") or props.get("ro.board.platform"),
                        "logical_cores": n, "usable_cores": n,
                        "max_mhz": max((c["max_mhz"] for c in cores), default=None),
                        "min_mhz": min((c["min_mhz"] for c in cores if c["min_mhz"] is not None), default=None),
                        "cores": cores or None, "big_cores": big or None,
                        "big_core_mask": f"{mask:x}" if mask else None},
                "memory": None, "governor": _governor(facts), "thermal": facts["zones"] or None,
                "load_average": facts["load"],
                "runtimes": {"executorch": {"installed": True, "version": None,
                                            "distribution": "native runner, pushed per run"}},
                "jetson": None,
                "android": {"serial": self.transport.serial, "release": android, "sdk": sdk,
                            "soc": props.get("ro.soc.model"), "soc_manufacturer": props.get("ro.soc.manufacturer"),
                            "board_platform": props.get("ro.board.platform"),
                            "fingerprint": props.get("ro.build.fingerprint"),
                            "thermal_status": facts["thermal_status"]}}

    def run_probe(self, request: dict, *, threads: int, timeout_s: float,
                  command: ProbeCommand | None = None) -> ProbeOutcome:
        try:
            # The folder the remote base puts this probe in (put() makes any other it is given).
            probe_dir = posixpath.join(self.transport.run_dir, f"p{self._probes + 1}")
            cool = self.cool_down(self.transport.renew_and_read_thermal(timeout_s + LOCK_GRACE_S, probe_dir))
        except DeviceLost as e:
            return ProbeOutcome("lost", None, f"lost the link to {self.transport.serial}: {e}")
        self._count_cool_down(cool)
        self.transport.mask = self.mask_for(threads)[0] or None
        self.transport.last_execution = None
        outcome = super().run_probe(request, threads=threads, timeout_s=timeout_s, command=command)
        run = self.transport.last_execution
        # A program killed by a signal after writing its result (a crash on the way out) is a
        # crash, as a local run says; the remote base reads only the result file.
        if outcome.status == "ok" and run is not None and run.returncode is not None and run.returncode < 0:
            return ProbeOutcome("crashed", None, f"the runner on {self.transport.serial} was killed by signal "
                                                 f"{-run.returncode} after writing its result: {run.detail}")
        return outcome
