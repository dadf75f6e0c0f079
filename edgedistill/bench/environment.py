"""What the machine looked like when a result was measured: recorded with every result."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from edgedistill import __version__
from edgedistill.backends.base import package_version

_DISTS = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "executorch", "tensorrt", "numpy",
          "litert-torch", "ai-edge-litert", "ai-edge-quantizer")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def governor() -> str | None:
    """The CPU frequency governor, where the kernel exposes it (not in most VMs)."""
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thermal_zones() -> list[dict] | None:
    """Temperatures in °C of the thermal zones the kernel exposes (Jetson, laptops), else None."""
    zones = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        temp = _read(str(zone / "temp"))
        if temp and temp.lstrip("-").isdigit():
            zones.append({"zone": _read(str(zone / "type")) or zone.name, "celsius": int(temp) / 1000})
    return zones or None


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, where the OS has them."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def environment(seed: int | None = None) -> dict:
    return {
        "tool_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "governor": governor(),
        "thermal": thermal_zones(),
        "load_average": load_average(),
        "seed": seed,
        "versions": {d: package_version(d) for d in _DISTS},
    }
