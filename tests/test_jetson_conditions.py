"""Jetson specifics (issue 11 item 5): unlocked clocks are INVALID, or a recorded warning where
the profile says `unlocked_clocks = "warn"`; the SSH device agent reads nvpmodel and
`jetson_clocks --show` (fake tools here, printing what a Jetson Orin Nano prints)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgedistill.bench import harness
from edgedistill.config import TargetConfig

ROOT = Path(__file__).resolve().parent.parent
DEVICE_INFO = ROOT / "edgedistill" / "probe" / "device_info.py"
# The simulated device's Python (3.8, as JetPack 5's; dev.py test builds it), else this one.
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
PYTHON = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
MEASURE = {"min_iterations": 10, "min_duration_s": 0.0}


def _warm(n=400):
    return {"samples_ms": [1.0] * n, "runs": [{"p50_ms": 1.0, "n": n, "duration_s": 1.0, "hit_max_duration": False}]}


def _check(conditions, **measurement):
    target = TargetConfig(name="t", measurement={**MEASURE, **measurement})
    problems = harness.measurement_problems(_warm(), {"session": {"device": "CPU"}}, target, conditions)
    return [p["kind"] for p in problems], [w["kind"] for w in harness.measurement_warnings(target, conditions)]


def test_unlocked_jetson_clocks_are_invalid_by_default_or_a_warning_when_the_profile_says_so():
    unlocked = {"jetson": {"nvpmodel": "15W", "clocks_locked": False}}
    assert _check(unlocked) == (["unlocked_clocks"], [])
    assert _check(unlocked, unlocked_clocks="warn") == ([], ["unlocked_clocks"])
    for fine in ({"jetson": {"nvpmodel": "MAXN", "clocks_locked": True}},
                 {"jetson": {"nvpmodel": None, "clocks_locked": None}},  # could not tell: not a problem
                 {}):  # not a Jetson
        assert _check(fine) == ([], []), fine


def _fake(bin_dir: Path, name: str, text: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\ncat <<'END'\n{text}\nEND\n")
    path.chmod(0o755)


def test_device_info_reads_the_power_mode_and_whether_clocks_are_locked(tmp_path):
    _fake(tmp_path, "nvpmodel", "NV Power Mode: 15W\n0")
    rows = {"unlocked": "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=1510400",
            "locked": "cpu0: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400"}
    for state, row in rows.items():
        _fake(tmp_path, "jetson_clocks", f"SOC family:tegra234  Machine:Jetson Orin Nano\nOnline CPUs: 0-5\n{row}\n"
                                         # jetson_clocks raises the GPU's minimum to its maximum too
                                         + ("GPU MinFreq=624750000" if state == "locked" else "GPU MinFreq=306000000")
                                         + " MaxFreq=624750000 CurrentFreq=624750000")
        done = subprocess.run([PYTHON, str(DEVICE_INFO), "--conditions"], capture_output=True, text=True, check=True,
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
        facts = json.loads(done.stdout)
        assert facts["jetson"] == {"nvpmodel": "15W", "clocks_locked": state == "locked"}
        assert facts["usable_cores"] >= 1 and len(facts["load_average_before"]) == 3
