"""Shipped profiles, `edgedistill targets list|show|validate|probe`, and probe/device_info.py.

device_info.py runs on devices: it is run here as a script copied alone into an empty folder,
under Python 3.8 where pyenv has one (JetPack 5's Python), and with fake `nvpmodel` and
`jetson_clocks` on PATH that print output recorded in the formats those tools print.
"""

import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, run_cli
from edgedistill.cli import cli
from edgedistill.config import SHIPPED_TARGETS, TargetConfig, load_target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_INFO = ROOT / "edgedistill" / "probe" / "device_info.py"
SHIPPED = {"local-cpu": "local", "ci-cpu": "local", "jetson-orin-nano": "ssh", "raspberry-pi-5": "ssh",
           "android-arm64": "adb"}
CONDITIONS_KEYS = {"load_average_before", "usable_cores", "governor", "thermal", "jetson"}


def _python38():
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = sorted(glob.glob(os.path.join(root, "versions", "3.8*", "bin", "python")))
    return found[-1] if found else None


PY38 = _python38()
needs_py38 = pytest.mark.skipif(PY38 is None, reason="no Python 3.8 under pyenv here (JetPack 5's Python)")


def invoke(args):
    """The CLI in this process (fast); exit codes and stderr as a user sees them."""
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# ---------------------------------------------------------------- the shipped profiles


def test_every_shipped_profile_loads_and_is_listed():
    r = invoke(["targets", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(SHIPPED), rows.keys()
    for name, runner in SHIPPED.items():
        assert "error" not in rows[name], rows[name]
        assert rows[name]["runner"] == runner and rows[name]["description"] and rows[name]["backends"]
    assert rows["jetson-orin-nano"]["device"] == "CUDA" and "tensorrt" in rows["jetson-orin-nano"]["backends"]
    assert load_target("jetson-orin-nano").ssh.host == "jetson"
    assert load_target("raspberry-pi-5").executorch_runtime == "python"
    adb = load_target("android-arm64")
    assert adb.backends == ["executorch"] and adb.executorch_runtime == "native"
    text = invoke(["targets", "list"]).stdout
    assert all(name in text for name in SHIPPED)


def test_android_runner_path_is_what_the_readme_cross_build_writes():
    readme = (ROOT / "README.md").read_text()
    built = re.search(r"cmake --build (\S+)\n", readme[readme.index("build-android"):]).group(1)
    assert load_target("android-arm64").adb.executorch_runner == Path(built) / "executorch_runner"


def _budget_lines(text):
    """(line, the comment lines just above it) for each key set in a [budgets...] table."""
    found, section, above = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section, above = stripped, []
        elif stripped.startswith("#"):
            above.append(stripped)
        elif "=" in stripped and section and section.startswith("[budgets"):
            found.append((line, " ".join(above)))
            above = [] if "#" not in line else above  # a block above covers the lines it precedes
        elif not stripped:
            above = []
    return found


SOURCE_WORDS = ("measured", "judgement", "device-independent", "local-cpu's", "[")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_budget_line_says_where_its_number_comes_from(name):
    text = (SHIPPED_TARGETS / f"{name}.toml").read_text()
    lines = _budget_lines(text)
    assert lines, f"{name} has no budgets"
    for line, above in lines:
        said = (line.split("#", 1)[1] if "#" in line else "") + " " + above
        assert any(w in said for w in SOURCE_WORDS), f"{name}: no source for {line.strip()!r}"
    # Every reference a profile cites is listed in docs/targets.md's references.
    refs = (ROOT / "docs" / "targets.md").read_text()
    for n in set(re.findall(r"\[(\d+)\]", text)):
        assert re.search(rf"^{n}\. ", refs, re.M), f"{name} cites [{n}], absent from docs/targets.md"


# ---------------------------------------------------------------- show, validate


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_show_prints_the_resolved_profile_that_loads_back_the_same(name, tmp_path):
    r = invoke(["targets", "show", name])
    assert r.exit_code == 0, r.output
    first, _, body = r.stdout.partition("\n")
    assert str(SHIPPED_TARGETS / f"{name}.toml") in first and "shipped" in first
    shown = tomllib.loads(body)
    assert "measurement" in shown and "caching_ratio" in shown["measurement"]  # defaults filled in
    assert TargetConfig.model_validate(shown) == load_target(name)
    as_json = json.loads(invoke(["targets", "show", name, "--json"]).stdout)
    assert as_json["shipped"] is True and as_json["target"]["name"] == name


def test_show_a_file_says_where_it_came_from(tmp_path):
    f = tmp_path / "board.toml"
    # a path key is a string in TOML (issue 11's own example: config = "ci/ssh_config")
    f.write_text('runner = "ssh"\n[ssh]\nhost = "pi@10.0.0.7"\nconfig = "ci/ssh_config"\n[budgets]\np90_ms = 5\n')
    out = json.loads(invoke(["targets", "show", str(f), "--json"]).stdout)
    assert out == {**out, "source": str(f), "shipped": False}
    assert out["target"]["name"] == "board" and out["target"]["ssh"]["workdir"] == "/tmp"
    assert out["target"]["ssh"]["config"] == "ci/ssh_config"


def test_validate_exits_2_with_one_line_per_bad_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[budgets]\np90_ms = 3\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('[budgets]\np90_latnecy_ms = 3\n')
    no_table = tmp_path / "no-ssh.toml"
    no_table.write_text('runner = "ssh"\n')
    r = run_cli(["targets", "validate", good, typo, no_table])  # a real process: the real exit code
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"ok: {good}" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and str(typo) in errors[0] and str(no_table) in errors[1]
    assert "did you mean 'budgets.p90_ms'" in r.stderr and "needs a [ssh] table" in errors[1]
    rows = json.loads(invoke(["targets", "validate", str(good), str(typo), "--json"]).stdout)
    assert [row["ok"] for row in rows] == [True, False] and "p90_latnecy_ms" in rows[1]["error"]
    assert invoke(["targets", "validate", *map(str, sorted(SHIPPED_TARGETS.glob("*.toml")))]).exit_code == 0


def test_each_targets_command_help_shows_its_options_and_an_example():
    for cmd in ("list", "show", "validate", "probe"):
        r = invoke(["targets", cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.stdout and "--json" in r.stdout, cmd
        assert "--teacher" not in r.stdout and "--target" not in r.stdout, cmd
    assert "Example" in invoke(["targets", "--help"]).stdout


# ---------------------------------------------------------------- probe


def test_probe_local_reports_this_machine():
    r = run_cli(["targets", "probe", "local-cpu", "--json"])
    assert r.returncode == 0, r.stderr
    probed = json.loads(r.stdout)
    d = probed["device"]
    assert probed["target"] == "local-cpu" and probed["runner"] == "local"
    assert d["python"]["version"] == platform.python_version() and d["cpu"]["logical_cores"] == os.cpu_count()
    for name in ("numpy", "onnxruntime"):
        assert d["runtimes"][name] == {"installed": True, "version": importlib.metadata.version(name),
                                       "distribution": name}
    text = run_cli(["targets", "probe", "local-cpu"]).stdout
    assert re.search(r"^runtimes .*onnxruntime " + re.escape(importlib.metadata.version("onnxruntime")), text, re.M)
    assert re.search(r"^cpu .*\d+ cores", text, re.M) and re.search(r"^governor ", text, re.M)


class _Runner:
    kind = "ssh"
    remote = True

    def __init__(self, fail=None):
        self.fail, self.closed = fail, False

    def device_info(self):
        if self.fail:
            raise self.fail
        return json.loads(subprocess.run([sys.executable, str(DEVICE_INFO)], capture_output=True,
                                         text=True, check=True).stdout)

    def close(self):
        self.closed = True


def test_probe_an_unreachable_device_is_one_line_exit_5(monkeypatch):
    from edgedistill.bench import runners
    from edgedistill.errors import InconclusiveError

    def unreachable(target, note):
        raise InconclusiveError(f"{target.name}: ssh jetson: connect to host jetson port 22: Connection refused",
                                "check the host is up and reachable")

    monkeypatch.setattr(runners, "open_runner", unreachable)
    r = invoke(["targets", "probe", "jetson-orin-nano"])
    assert r.exit_code == 5 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: jetson-orin-nano: ssh jetson: connect to host jetson port 22: Connection refused",
        "  hint: check the host is up and reachable"]


def test_probe_closes_the_runner_when_the_device_drops_mid_probe(monkeypatch):
    from edgedistill.bench import runners
    from edgedistill.errors import InconclusiveError

    opened = []

    def open_fake(target, note):
        opened.append(_Runner(InconclusiveError("raspberry-pi-5: the SSH link dropped (no answer within 15 s)")))
        return opened[-1]

    monkeypatch.setattr(runners, "open_runner", open_fake)
    r = invoke(["targets", "probe", "raspberry-pi-5", "--json"])
    assert r.exit_code == 5 and "link dropped" in r.stderr and opened[0].closed
    # And a device that answers: its description under the target's name, runner closed too.
    monkeypatch.setattr(runners, "open_runner", lambda target, note: opened.append(_Runner()) or opened[-1])
    out = json.loads(invoke(["targets", "probe", "raspberry-pi-5", "--json"]).stdout)
    assert out["reached"] == "raspberrypi" and out["device"]["device_info_version"] == 1 and opened[1].closed


# ---------------------------------------------------------------- device_info.py on a device's Python


def _alone(tmp_path):
    """device_info.py copied into an empty folder, as a runner puts it on a device."""
    folder = tmp_path / "device"
    folder.mkdir()
    return Path(shutil.copy(DEVICE_INFO, folder / "device_info.py"))


def _run_info(script, *args, python=None, env=None):
    p = subprocess.run([python or sys.executable, str(script), *args], capture_output=True, text=True,
                       timeout=60, env=env, cwd=script.parent)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1  # ONE JSON object, one line
    return json.loads(p.stdout)


@needs_py38
def test_device_info_runs_alone_on_python_38(tmp_path):
    script = _alone(tmp_path)
    env = {"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"}  # no edgedistill, no venv
    info = _run_info(script, python=PY38, env=env)
    assert info["python"]["version"].startswith("3.8.") and info["cpu"]["logical_cores"] == os.cpu_count()
    assert info["machine"] == platform.machine() and isinstance(info["cpu"]["model"], str)
    assert set(info["runtimes"]) == {"numpy", "onnxruntime", "openvino", "executorch", "tensorrt", "litert"}
    assert info["jetson"] is None  # no /etc/nv_tegra_release, no nvpmodel here
    cond = _run_info(script, "--conditions", python=PY38, env=env)
    assert set(cond) == CONDITIONS_KEYS
    assert len(cond["load_average_before"]) == 3 and all(isinstance(x, float) for x in cond["load_average_before"])
    assert cond["usable_cores"] == len(os.sched_getaffinity(0))
    bad = subprocess.run([PY38, str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stdout == "" and "usage" in bad.stderr


def test_device_info_reads_versions_without_importing_runtimes():
    code = ("import runpy, sys; m = runpy.run_path(sys.argv[1]); r = m['runtimes'](); "
            "print(r['onnxruntime']['version'], r['tensorrt']['installed'], "
            "sorted(n for n in ('onnxruntime', 'openvino', 'executorch', 'numpy') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(DEVICE_INFO)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split(None, 2)
    assert out[0] == importlib.metadata.version("onnxruntime")
    assert out[1] == str(importlib.util.find_spec("tensorrt") is not None)
    assert out[2].strip() == "[]"


# Recorded output of the Jetson tools, in the formats they print:
# - `nvpmodel -q`: "NV Power Mode: <name>" then the mode id on the next line. NVIDIA documents
#   the command (Jetson Linux Developer Guide, "Power Management for Jetson Nano ... Devices":
#   "To display the current power mode: sudo /usr/sbin/nvpmodel -q",
#   https://docs.nvidia.com/jetson/l4t/Tegra%20Linux%20Driver%20Package%20Development%20Guide/power_management_nano.html);
#   the lines as printed on an Orin Nano 8 GB, JetPack 6.2: "NV Power Mode: MAXN_SUPER" (mode 2),
#   https://hokwangchoi.com/blog/vision-benchmarks/ ; the id line as jetson-stats parses it
#   (rbonghi/jetson_stats, jtop/core/nvpmodel.py).
# - `jetson_clocks --show`: "SOC family:..", "Online CPUs: ..", one "cpuN: Online=1 Governor=..
#   MinFreq=.. MaxFreq=.. CurrentFreq=.. IdleStates: .." line per core (kHz), "GPU MinFreq=..
#   MaxFreq=.. CurrentFreq=.." (Hz), "EMC ... FreqOverride=..", "NV Power Mode: ..": the lines
#   recorded on a Nano and a Xavier in jetson-stats (jtop/core/jetson_clocks.py) and on a TX1
#   (hordiales/jetson-tx1-dev, SCRIPTS.md). Frequencies here: an Orin Nano's 15 W mode maxima
#   (CPU 1.51 GHz, GPU 625 MHz, EMC 2133 MHz: docs/targets.md [5]); the minimums are illustrative.
NVPMODEL_Q = "NV Power Mode: MAXN_SUPER\n2\n"


def _jetson_clocks_show(locked: bool) -> str:
    cpu_min, gpu_min = ("1510400", "624750000") if locked else ("729600", "306000000")
    cur = "1510400" if locked else "729600"
    lines = ["SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit", "Online CPUs: 0-5"]
    lines += [f"cpu{i}: Online=1 Governor=schedutil MinFreq={cpu_min} MaxFreq=1510400 CurrentFreq={cur} "
              "IdleStates: WFI=1 c7=1" for i in range(6)]
    lines += [f"GPU MinFreq={gpu_min} MaxFreq=624750000 CurrentFreq={gpu_min}",
              "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1",
              "FAN Dynamic Speed control=active hwmon3_pwm=85", "NV Power Mode: MAXN_SUPER"]
    return "\n".join(lines) + "\n"


def _fake_tools(folder: Path, clocks: str | None, clocks_status: int = 0) -> dict:
    folder.mkdir(exist_ok=True)
    (folder / "nvpmodel.out").write_text(NVPMODEL_Q)
    (folder / "nvpmodel").write_text(f'#!/bin/sh\n[ "$1" = "-q" ] || exit 1\ncat "{folder}/nvpmodel.out"\n')
    # Without root the real jetson_clocks refuses to run; clocks=None records that.
    (folder / "clocks.out").write_text(clocks if clocks is not None else "Error: Run this script as a root user\n")
    (folder / "jetson_clocks").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = "--show" ] || exit 1
        cat "{folder}/clocks.out"
        exit {clocks_status if clocks is not None else 1}
        """))
    for tool in ("nvpmodel", "jetson_clocks"):
        (folder / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("locked", [False, True])
def test_device_info_reads_nvpmodel_and_jetson_clocks(tmp_path, locked):
    script = _alone(tmp_path)
    env = _fake_tools(tmp_path / "bin", _jetson_clocks_show(locked))
    info = _run_info(script, python=PY38, env=env)
    j = info["jetson"]
    assert (j["nvpmodel"], j["nvpmodel_id"], j["clocks_locked"], j["clocks_source"]) == (
        "MAXN_SUPER", 2, locked, "jetson_clocks --show")
    assert len(j["clocks"]["cpus"]) == 6 and j["clocks"]["gpu"]["max_hz"] == 624750000
    cond = _run_info(script, "--conditions", python=PY38, env=env)
    assert set(cond) == CONDITIONS_KEYS and cond["jetson"] == {"nvpmodel": "MAXN_SUPER", "clocks_locked": locked}


def test_device_info_without_root_leaves_clocks_unknown_here(tmp_path):
    """jetson_clocks --show refuses without root; the sysfs fallback needs cpufreq, which this
    VM does not expose: clocks_locked is null (unknown), never a guess."""
    script = _alone(tmp_path)
    env = _fake_tools(tmp_path / "bin", None)
    j = _run_info(script, env=env)["jetson"]
    assert j["nvpmodel"] == "MAXN_SUPER" and "root" in j["jetson_clocks_error"]
    if not glob.glob("/sys/devices/system/cpu/cpu*/cpufreq"):
        assert j["clocks_locked"] is None and j["clocks_source"] is None
    else:
        assert j["clocks_source"] == "sysfs" and isinstance(j["clocks_locked"], bool)


def test_device_info_parsers_on_recorded_text():
    import runpy

    m = runpy.run_path(str(DEVICE_INFO))
    # /proc/cpuinfo of a Raspberry Pi 5 (aarch64 has no "model name"; Cortex-A76 is part 0xd0b)
    pi5 = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n" * 4
    assert m["cpu_model"](pi5) == "Cortex-A76"
    phone = ("CPU implementer\t: 0x41\nCPU part\t: 0xd05\n" * 4 + "CPU implementer\t: 0x41\nCPU part\t: 0xd41\n" * 4
             + "Hardware\t: Qualcomm\n")
    assert m["cpu_model"](phone) == "Cortex-A55 + Cortex-A78"
    assert m["cpu_model"]("model name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    kryo = "CPU implementer\t: 0x51\nCPU part\t: 0x805\n"  # a Qualcomm-designed core: not guessed
    assert m["cpu_model"](kryo) == "implementer 0x51 part 0x805"
    release = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8"
    assert m["l4t_release"](release) == "R36.4.3" and m["l4t_release"]("garbage") is None
    assert m["parse_nvpmodel"]("NV Fan Mode:quiet\nNV Power Mode: 15W\n0\n") == ("15W", 0)
    assert m["parse_nvpmodel"]("nvpmodel: command failed") == (None, None)
    assert m["parse_jetson_clocks"]("Error: Run this script as a root user") is None
    # one core left unpinned is enough for "not locked"
    mixed = _jetson_clocks_show(True).replace("cpu3: Online=1 Governor=schedutil MinFreq=1510400",
                                              "cpu3: Online=1 Governor=schedutil MinFreq=729600")
    assert m["parse_jetson_clocks"](mixed)["locked"] is False
    # a tool that hangs is cut off after the timeout, with the reason
    m["run"].__globals__["COMMAND_TIMEOUT_S"] = 0.3
    status, why = m["run"]([sys.executable, "-c", "import time; time.sleep(10)"])
    assert status is None and "did not answer within 0.3 s" in why


def test_device_info_is_python_38_and_stdlib_only():
    """Checked even where no Python 3.8 is installed: it parses as 3.8 and imports nothing
    outside the standard library (and nothing of edgedistill)."""
    import ast

    tree = ast.parse(DEVICE_INFO.read_text(), str(DEVICE_INFO), feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_core_frequencies_from_a_cpufreq_tree(tmp_path):
    """The kernel's cpufreq files (kHz; Documentation/admin-guide/pm/cpufreq.rst), as a Pi 5
    exposes them (1.5-2.4 GHz), one core taken offline: this VM exposes none, so a tree is made."""
    import runpy

    m = runpy.run_path(str(DEVICE_INFO))
    for cpu in range(4):
        freq = tmp_path / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        for name, khz in (("cpuinfo_min_freq", 1500000), ("cpuinfo_max_freq", 2400000),
                          ("scaling_min_freq", 1500000), ("scaling_max_freq", 2400000),
                          ("scaling_cur_freq", 1500000)):
            (freq / name).write_text(f"{khz}\n")
        (freq / "scaling_governor").write_text("ondemand\n")
        if cpu:
            (tmp_path / f"cpu{cpu}" / "online").write_text("0\n" if cpu == 3 else "1\n")
    (tmp_path / "cpufreq").mkdir()  # not a core: ignored
    cores = m["core_frequencies"](str(tmp_path))
    assert [c["cpu"] for c in cores] == [0, 1, 2, 3] and [c["online"] for c in cores] == [True, True, True, False]
    assert cores[0] == {"cpu": 0, "online": True, "min_mhz": 1500, "max_mhz": 2400, "scaling_min_mhz": 1500,
                        "scaling_max_mhz": 2400, "cur_mhz": 1500, "governor": "ondemand"}
