"""What the machine this runs on is: printed as ONE JSON object on stdout.

    python device_info.py               # the full description (`edgedistill targets probe`)
    python device_info.py --conditions  # the quick subset read before each measurement

Copied alone to a device (a Jetson over SSH, a board), so: stdlib only, Python >= 3.8, no
import of edgedistill or of any runtime (a runtime's version comes from its installed
metadata, importlib.metadata, without importing it: importing tensorrt or openvino takes
seconds and can fail in ways that say nothing about whether it is installed). Every fact is
null where the machine does not expose it; nothing here raises for a missing file or tool.

Sources: /proc/cpuinfo, /proc/meminfo, /proc/device-tree/model, /sys/devices/system/cpu/cpu*/
cpufreq, /sys/class/thermal, `platform`, and on a Jetson /etc/nv_tegra_release, `nvpmodel -q`
and `jetson_clocks --show` (each under a short timeout).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

VERSION = 1  # of this object's layout
COMMAND_TIMEOUT_S = 5.0  # nvpmodel / jetson_clocks answer in well under a second on a device

# Python distributions per runtime, first found wins: a runtime ships under several names
# (onnxruntime-gpu on a Jetson or CUDA machine, tensorrt-cu12 from NVIDIA's index).
RUNTIME_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "executorch": ("executorch",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
    "litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
}
RUNTIME_MODULES = {"numpy": "numpy", "onnxruntime": "onnxruntime", "openvino": "openvino",
                   "executorch": "executorch", "tensorrt": "tensorrt", "litert": "ai_edge_litert"}

# Arm Ltd's core part numbers (MIDR_EL1.PartNum, the "CPU part" line of /proc/cpuinfo on Arm,
# which has no "model name"; implementer 0x41), as Linux names them in
# arch/arm64/include/asm/cputype.h. Other implementers' parts (Qualcomm 0x51, ...) are shown raw.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path):
    text = read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------ CPU


def cpu_model(cpuinfo, device_tree_model=None):
    """The CPU's name: x86's "model name"; on Arm the core names from "CPU part" (a Pi 5:
    "Cortex-A76"; big.LITTLE phones: "Cortex-A55 + Cortex-A78"), else "Hardware"."""
    cpuinfo = cpuinfo or ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    parts, implementer = [], None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip().lower()
        if key == "CPU implementer":
            implementer = value
        elif key == "CPU part":
            name = (ARM_PARTS.get(value) if implementer in (None, "0x41") else None) or \
                "implementer {} part {}".format(implementer or "?", value)
            if name not in parts:
                parts.append(name)
    if parts:
        return " + ".join(parts)
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Hardware" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or None


def board_model():
    """The board's name from the device tree (Jetson, Raspberry Pi, most Arm boards), else null."""
    text = read("/proc/device-tree/model")
    return text.rstrip("\x00").strip() or None if text else None


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_number(path):
    m = re.search(r"cpu(\d+)$", path)
    return int(m.group(1)) if m else -1


def core_frequencies(sys_cpu="/sys/devices/system/cpu"):
    """Per core: its cpufreq limits in MHz (hardware min/max, the governor's current limits, the
    current frequency) and governor; [] where cpufreq is not exposed (most VMs)."""
    cores = []
    for path in sorted(glob.glob(os.path.join(sys_cpu, "cpu[0-9]*")), key=_cpu_number):
        freq = os.path.join(path, "cpufreq")
        if not os.path.isdir(freq):
            continue

        def mhz(name):
            khz = read_int(os.path.join(freq, name))
            return round(khz / 1000) if khz is not None else None

        cores.append({
            "cpu": _cpu_number(path),
            "online": read_int(os.path.join(path, "online")) != 0,  # cpu0 has no "online" file
            "min_mhz": mhz("cpuinfo_min_freq"), "max_mhz": mhz("cpuinfo_max_freq"),
            "scaling_min_mhz": mhz("scaling_min_freq"), "scaling_max_mhz": mhz("scaling_max_freq"),
            "cur_mhz": mhz("scaling_cur_freq"), "governor": read(os.path.join(freq, "scaling_governor")),
        })
    return cores


def governor():
    """cpu0's governor, where the kernel exposes it (not in most VMs)."""
    return read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def thermal():
    """Temperatures in degrees C of the kernel's thermal zones (boards, phones, laptops), else null."""
    zones = []
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*"),
                       key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0)):
        temp = read(os.path.join(zone, "temp"))
        if temp and temp.lstrip("-").isdigit():
            zones.append({"zone": read(os.path.join(zone, "type")) or os.path.basename(zone),
                          "celsius": int(temp) / 1000})
    return zones or None


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def memory_mb():
    info = read("/proc/meminfo") or ""
    found = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.strip().endswith("kB"):
            found[key] = round(int(value.split()[0]) / 1024)
    return {"total_mb": found.get("MemTotal"), "available_mb": found.get("MemAvailable")} if found else None


# ------------------------------------------------------------------ runtimes


def runtimes():
    """Each runtime: installed or not, its version and distribution, from the installed metadata
    (no import). A module found without metadata (a system package, JetPack's apt-installed
    TensorRT bindings) counts as installed with version null."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        metadata = None
    import importlib.util

    found = {}
    for name, dists in RUNTIME_DISTRIBUTIONS.items():
        entry = {"installed": False, "version": None, "distribution": None}
        for dist in dists:
            try:
                entry = {"installed": True, "version": metadata.version(dist), "distribution": dist}
                break
            except Exception:  # PackageNotFoundError, or metadata missing entirely
                continue
        if not entry["installed"]:
            try:
                # find_spec of a top-level name locates it without running it
                entry["installed"] = importlib.util.find_spec(RUNTIME_MODULES[name]) is not None
            except (ImportError, ValueError):
                pass
        found[name] = entry
    return found


# ------------------------------------------------------------------ Jetson


def run(argv):
    """(exit status, stdout) of a short command, or (None, why) when it could not run."""
    if shutil.which(argv[0]) is None:
        return None, argv[0] + " not found on PATH"
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S,
                           universal_newlines=True, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "{} did not answer within {:g} s".format(" ".join(argv), COMMAND_TIMEOUT_S)
    except OSError as e:
        return None, "{}: {}".format(argv[0], e.strerror or e)
    return p.returncode, p.stdout


def l4t_release(text):
    """'R36.4.3' from /etc/nv_tegra_release's first line
    ('# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ...')."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return "R{}.{}".format(m.group(1), m.group(2)) if m else None


def parse_nvpmodel(text):
    """(mode name, mode id) from `nvpmodel -q`: a line 'NV Power Mode: <NAME>' and the id on the
    next line (see tests/test_targets.py for the recorded output and its sources)."""
    lines = (text or "").splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"NV Power Mode:\s*(\S.*)$", line)
        if m:
            mode_id = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return m.group(1).strip(), int(mode_id) if mode_id.isdigit() else None
    return None, None


_FREQS = re.compile(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")


def parse_jetson_clocks(text):
    """`jetson_clocks --show`: per CPU and for the GPU, min/max/current frequency; clocks are
    locked when every online CPU and the GPU run with their minimum raised to their maximum
    (what `jetson_clocks` sets). None when the output holds no frequency line."""
    cpus, gpu, emc = [], None, None
    for line in (text or "").splitlines():
        line = line.strip()
        f = _FREQS.search(line)
        if not f:
            continue
        lo, hi, cur = (int(x) for x in f.groups())
        m = re.match(r"cpu(\d+):", line)
        if m:
            online = re.search(r"Online=(\d)", line)
            cpus.append({"cpu": int(m.group(1)), "online": online is None or online.group(1) == "1",
                         "min_khz": lo, "max_khz": hi, "cur_khz": cur})
        elif line.startswith("GPU"):
            gpu = {"min_hz": lo, "max_hz": hi, "cur_hz": cur}
        elif line.startswith("EMC"):
            emc = {"min_hz": lo, "max_hz": hi, "cur_hz": cur}
    if not cpus and gpu is None:
        return None
    pinned = [c["min_khz"] == c["max_khz"] for c in cpus if c["online"]]
    if gpu is not None:
        pinned.append(gpu["min_hz"] == gpu["max_hz"])
    return {"locked": all(pinned), "cpus": cpus, "gpu": gpu, "emc": emc}


def _sysfs_clocks_locked():
    """Without root (`jetson_clocks --show` needs it): the same test on what sysfs shows to any
    user, each online core's scaling_min == scaling_max and the GPU's devfreq min == max."""
    pinned = []
    for core in core_frequencies():
        if core["online"] and core["scaling_min_mhz"] is not None:
            pinned.append(core["scaling_min_mhz"] == core["scaling_max_mhz"])
    for dev in glob.glob("/sys/class/devfreq/*"):
        if re.search(r"gpu|ga10b|gv11b|gp10b|gm20b", os.path.basename(dev)):
            lo, hi = read_int(os.path.join(dev, "min_freq")), read_int(os.path.join(dev, "max_freq"))
            if lo is not None and hi is not None:
                pinned.append(lo == hi)
    return all(pinned) if pinned else None


def is_jetson():
    return os.path.exists("/etc/nv_tegra_release") or shutil.which("nvpmodel") is not None


def jetson(full=True):
    """nvpmodel mode and whether clocks are locked, on a Jetson; None elsewhere."""
    if not is_jetson():
        return None
    status, out = run(["nvpmodel", "-q"])
    mode, mode_id = parse_nvpmodel(out) if status == 0 else (None, None)
    facts = {"nvpmodel": mode, "clocks_locked": None}
    status, shown = run(["jetson_clocks", "--show"])
    clocks = parse_jetson_clocks(shown) if status == 0 else None
    if clocks is not None:
        facts["clocks_locked"], source = clocks["locked"], "jetson_clocks --show"
    else:
        facts["clocks_locked"] = _sysfs_clocks_locked()
        source = "sysfs" if facts["clocks_locked"] is not None else None
    if full:
        release = read("/etc/nv_tegra_release")
        facts.update({
            "l4t": l4t_release(release), "nv_tegra_release": release.splitlines()[0] if release else None,
            "nvpmodel_id": mode_id, "clocks_source": source,
            "clocks": clocks, "jetson_clocks_error": None if clocks is not None else (shown or "").strip()[-300:] or None,
        })
    return facts


# ------------------------------------------------------------------ the objects


def _fact(fn, *args):
    """A fact, or None when reading it failed in a way not foreseen: one odd file never costs
    the whole description."""
    try:
        return fn(*args)
    except Exception:
        return None


def conditions():
    return {
        "load_average_before": _fact(load_average),
        "usable_cores": _fact(usable_cores),
        "governor": _fact(governor),
        "thermal": _fact(thermal),
        "jetson": _fact(jetson, False),
    }


def describe():
    cores = _fact(core_frequencies) or []
    maxes = [c["max_mhz"] for c in cores if c["max_mhz"] is not None]
    mins = [c["min_mhz"] for c in cores if c["min_mhz"] is not None]
    return {
        "device_info_version": VERSION,
        "hostname": _fact(platform.node),
        "platform": _fact(platform.platform),
        "machine": _fact(platform.machine),
        "board": _fact(board_model),
        "os": _fact(lambda: dict(re.findall(r'^(PRETTY_NAME)="?([^"\n]*)"?$', read("/etc/os-release") or "",
                                            re.M)).get("PRETTY_NAME")),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "cpu": {
            "model": _fact(cpu_model, read("/proc/cpuinfo")),
            "logical_cores": os.cpu_count(),
            "usable_cores": _fact(usable_cores),
            "max_mhz": max(maxes) if maxes else None,
            "min_mhz": min(mins) if mins else None,
            "cores": cores or None,
        },
        "memory": _fact(memory_mb),
        "governor": _fact(governor),
        "thermal": _fact(thermal),
        "load_average": _fact(load_average),
        "runtimes": _fact(runtimes),
        "jetson": _fact(jetson, True),
    }


def main(argv):
    if argv[1:] not in ([], ["--conditions"]):
        sys.stderr.write("usage: python device_info.py [--conditions]\n")
        return 2
    print(json.dumps(conditions() if argv[1:] == ["--conditions"] else describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
