"""The SSH runner against a real OpenSSH server on 127.0.0.1 (issue 11 items 2, 3 and 7's lock).

The "device" is this machine reached through sshd, its Python a separate virtual environment
with only numpy and onnxruntime (`.venv-device`, Python 3.8 where pyenv has it; built by
`python3 dev.py test`). Models are tiny ONNX files made with onnx.helper; each bench measures
for a fraction of a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.bench.runners.remote import DeviceLost
from tests.conftest import ROOT, run_cli
from tests.sshd import ALIAS, DEVICE_PYTHON, Sshd, here_with_the_device_python, why_missing

DEVICE_VENV = DEVICE_PYTHON.parent.parent

_MEASUREMENT = """
[measurement]
warmup_iterations = 2
min_iterations = {min_iterations}
min_duration_s = {min_duration_s}
max_duration_s = {max_duration_s}
cold_runs = {cold_runs}
measure_cache = false
timeout_s = 60
max_load_per_core = 1000.0      # three engineers share two cores: the machine is not under test here
max_others_cpu_share = 1.0
"""


def _why_no_device() -> str | None:
    if why := why_missing():
        return why
    if not DEVICE_PYTHON.exists():
        return f"no device venv at {DEVICE_VENV} (python3 dev.py test builds it: numpy + onnxruntime)"
    done = subprocess.run([str(DEVICE_PYTHON), "-c", "import numpy, onnxruntime"], capture_output=True, check=False)
    if done.returncode:
        return f"the device venv {DEVICE_VENV} lacks numpy or onnxruntime (python3 dev.py test installs them)"
    return None


pytestmark = pytest.mark.skipif(bool(_why_no_device()), reason=_why_no_device() or "")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


def _toml(value) -> str:
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def ssh_target(folder: Path, sshd: Sshd, *, name: str = "dev", workdir: Path | None = None, python=DEVICE_PYTHON,
               config: Path | None = None, lock_wait_s: float = 30, min_iterations: int = 20,
               min_duration_s: float = 0.05, max_duration_s: float = 3.0, cold_runs: int = 2) -> Path:
    workdir = workdir or folder / "device-workdir"
    workdir.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nrunner = "ssh"\ndevice = "CPU"\nthreads = 1\nbackends = ["onnxruntime"]\n'
        + _MEASUREMENT.format(min_iterations=min_iterations, min_duration_s=min_duration_s,
                              max_duration_s=max_duration_s, cold_runs=cold_runs)
        + f"\n[ssh]\nhost = {_toml(ALIAS)}\nconfig = {_toml(config or sshd.config)}\npython = {_toml(python)}\n"
          f"workdir = {_toml(workdir)}\nconnect_timeout_s = 5\nalive_interval_s = 1\nalive_count_max = 2\n"
          f"lock_wait_s = {lock_wait_s}\n")
    return path


def local_target(folder: Path, cold_runs: int = 2) -> Path:
    path = folder / "local.toml"
    path.write_text('name = "here"\ndevice = "CPU"\nthreads = 1\nbackends = ["onnxruntime"]\n'
                    + _MEASUREMENT.format(min_iterations=20, min_duration_s=0.05, max_duration_s=3.0,
                                          cold_runs=cold_runs))
    return path


def tiny_onnx(path: Path, width: int = 64, layers: int = 2) -> Path:
    """A few MatMul+Relu layers on a [1, width] input: microseconds per inference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 8, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime 1.19 (the device's) reads IR <= 10
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


def _bench(args, cwd: Path, timeout: int = 300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return run_cli(["bench", *map(str, args)], cwd=cwd, env=env, timeout=timeout)


def _results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["targets"][0]["results"]


def _leftovers(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.glob("edgedistill-run-*"))


# ---------------------------------------------------------------- (a) (b) the probe on the device


def _bench_here_with_the_device_python(model: Path, tmp_path: Path) -> dict:
    """The same model and target measured on this machine by the same interpreter and runtime
    (the device venv's), so the ratio compares the transport, not two Python/runtime versions."""
    from edgedistill.artifacts import Artifact
    from edgedistill.bench.harness import EvalSet, bench_artifact
    from edgedistill.config import load_target

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32))
    artifact = Artifact(kind="onnx", path=model, backend="onnxruntime")
    return bench_artifact(artifact, load_target(local_target(tmp_path, cold_runs=3)), EvalSet(inputs),
                          tmp_path / "here", runner=here_with_the_device_python())


def test_probe_runs_on_the_device_python_and_agrees_with_a_local_run(sshd, model, tmp_path):
    remote_out = tmp_path / "ssh" / "results.json"
    target = ssh_target(tmp_path, sshd, cold_runs=3)
    done = _bench([model, "--target", target, "-o", remote_out], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (remote,) = _results(remote_out)
    local = _bench_here_with_the_device_python(model, tmp_path)
    assert remote["status"] == "ok", remote["status_detail"]
    device_python = subprocess.run([str(DEVICE_PYTHON), "-c", "import platform; print(platform.python_version())"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    # Measured by the device's interpreter (the venv with no torch and no edgedistill), not this one.
    assert remote["runner"]["kind"] == "python" and remote["runner"]["python"] == device_python
    assert device_python != ".".join(map(str, sys.version_info[:3]))
    assert remote["runtime_version"] == subprocess.run(
        [str(DEVICE_PYTHON), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert remote["conditions"]["usable_cores"] >= 1 and "load_average_before" in remote["conditions"]
    # The device's clock timed the interpreter start (the agent's EDGEDISTILL_PARENT_START_WALL_NS).
    assert all(run["interpreter_ms"] and run["interpreter_ms"] > 0 for run in remote["cold"]["runs"])
    assert _leftovers(tmp_path / "device-workdir") == []  # the run folder is removed at close
    assert local["status"] == "ok", local["status_detail"]
    ratio, shown = {}, {}
    for key, get in (("cold_start_ms", lambda r: r["cold"]["total_ms"]["median"]),
                     ("warm_median_ms", lambda r: r["warm"]["summary"]["p50_ms"])):
        ratio[key] = get(remote) / get(local)
        shown[key] = f"{get(remote):.3f} / {get(local):.3f} = {ratio[key]:.3f}"
        assert 0.05 < ratio[key] < 20, (key, get(remote), get(local))  # sanity only: timing is noisy here
    print(f"\nSSH / local (same Python {device_python} and onnxruntime), medians in ms: {shown}")


# ---------------------------------------------------------------- (d) host keys


@pytest.mark.parametrize("config_name,says", [("wrong_ssh_config", "not the one pinned"),
                                              ("unknown_ssh_config", "not in known_hosts")])
def test_an_unknown_or_changed_host_key_is_refused_before_anything_runs(sshd, model, tmp_path, config_name, says):
    out = tmp_path / "results.json"
    workdir = tmp_path / "device-workdir"
    target = ssh_target(tmp_path, sshd, workdir=workdir, config=sshd.folder / config_name)
    done = _bench([model, "--target", target, "-o", out], tmp_path)
    assert done.returncode == 6, done.stdout[-2000:] + done.stderr[-2000:]
    err = done.stderr
    assert says in err and "nothing was run" in err and "ssh-keyscan -p" in err and "Traceback" not in err
    assert list(workdir.iterdir()) == []  # no lock file, no run folder: no command reached the device


def test_an_unreachable_device_is_inconclusive_with_ssh_s_reason(sshd, model, tmp_path):
    from edgedistill.bench.runners import open_runner
    from edgedistill.config import load_target
    from edgedistill.errors import InconclusiveError

    target = load_target(ssh_target(tmp_path, sshd))
    target.ssh.port = 1  # -p overrides the config's port: nothing listens there
    with pytest.raises(InconclusiveError) as e:
        open_runner(target)
    assert "Connection refused" in e.value.message and e.value.exit_code == 5
    # A key the device does not accept: ssh's own reason, still inconclusive (exit 5), never a prompt.
    config = sshd.folder / "wrong_key_ssh_config"
    config.write_text(sshd.config.read_text().replace("client_key", "other_host_key"))
    with pytest.raises(InconclusiveError) as e:
        _open(ssh_target(tmp_path, sshd, name="wrongkey", config=config))
    assert "Permission denied (publickey" in e.value.message and e.value.exit_code == 5


def test_a_device_without_the_named_python_is_inconclusive_saying_so(sshd, tmp_path):
    from edgedistill.errors import InconclusiveError

    with pytest.raises(InconclusiveError) as e:
        _open(ssh_target(tmp_path, sshd, python=tmp_path / "no-such-python3"))
    assert "could not start the device agent" in e.value.message and "no-such-python3" in e.value.message
    assert "Python >= 3.8" in e.value.hint
    assert _leftovers(tmp_path / "device-workdir") == []


# ---------------------------------------------------------------- (f) quoting


def test_paths_with_spaces_semicolons_and_substitutions_reach_the_device_literally(sshd, tmp_path):
    odd = "a b;c $(touch pwned) `touch pwned2`"
    home = Path.home()
    model = tiny_onnx(tmp_path / odd / f"m {odd}.onnx")
    workdir = tmp_path / f"wd {odd}"
    out = tmp_path / "results.json"
    done = _bench([model, "--target", ssh_target(tmp_path, sshd, workdir=workdir, cold_runs=1), "-o", out], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = _results(out)
    assert result["status"] == "ok", result["status_detail"]
    assert workdir.is_dir() and (workdir / "edgedistill-device.lock").exists()  # the literal name, made there
    for folder in (home, tmp_path, workdir, Path.cwd()):
        assert not list(folder.glob("pwned*")), f"a command ran in {folder}"


# ---------------------------------------------------------------- (g) the device lock


def _open(target_file: Path, notes: list | None = None):
    from edgedistill.bench.runners import open_runner
    from edgedistill.config import load_target

    return open_runner(load_target(target_file), (notes if notes is not None else []).append)


def test_two_jobs_on_one_device_queue_and_a_short_wait_is_inconclusive_naming_the_holder(sshd, tmp_path,
                                                                                         monkeypatch):
    from edgedistill.errors import InconclusiveError

    monkeypatch.setenv("CI_JOB_ID", "job-42")
    first = _open(ssh_target(tmp_path, sshd, name="a"))
    try:
        serving = sshd.session_pids()
        assert serving
        for _ in range(3):
            first.conditions()
        assert sshd.session_pids() == serving  # one connection for the run: no new sshd forked per command
        holder = first.transport.facts["holder"]
        with pytest.raises(InconclusiveError) as e:
            _open(ssh_target(tmp_path, sshd, name="b", lock_wait_s=0.5))
        assert e.value.exit_code == 5 and "stayed busy" in e.value.message
        assert f"pid {holder['pid']}" in e.value.message and holder["user"] in e.value.message
        assert f"(pid {os.getpid()})" in e.value.message and holder["ci_job"] == "job-42"  # the job that holds it
        # A second job that may wait queues: it gets the device once the first lets go.
        got: dict = {}
        notes: list = []

        def second():
            t0 = time.monotonic()
            got["runner"] = _open(ssh_target(tmp_path, sshd, name="c", lock_wait_s=30), notes)
            got["waited_s"] = time.monotonic() - t0

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.5)
        assert "runner" not in got  # still queued behind the first
        first.close()
        thread.join(timeout=30)
        assert got["waited_s"] >= 1.4 and any("busy" in n and "waiting" in n for n in notes)
        got["runner"].close()
    finally:
        first.close()
    assert _leftovers(tmp_path / "device-workdir") == []


# ---------------------------------------------------------------- (h) stale runs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_a_killed_run_s_folder_and_processes_are_cleaned_at_the_next_open(sshd, tmp_path):
    target = ssh_target(tmp_path, sshd)
    runner = _open(target)
    run_dir = Path(runner.transport.run_dir)
    marker = tmp_path / "sleeper.pid"
    # A probe that leaves a process behind, started through the agent like any probe.
    def probe():
        try:
            runner.transport.execute(["sh", "-c", f"echo $$ > {marker}; exec sleep 300"], cwd=str(run_dir / "p1"),
                                     env={}, timeout_s=300)
        except DeviceLost:
            pass  # what killing the agents below does to this session

    probe = threading.Thread(target=probe, daemon=True)
    probe.start()
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sleeper = int(marker.read_text())
    # The device kills the run's agents (an OOM kill, a reboot of the session): nothing cleans up.
    agents = subprocess.run(["pgrep", "-f", f"device_agent.py.*{runner.transport.run_id}"],
                            capture_output=True, text=True).stdout.split()
    holder = runner.transport.facts["holder"]["pid"]
    for pid in {*map(int, agents), holder}:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    assert run_dir.is_dir() and _alive(sleeper)  # stale: the folder and the process are left
    runner.close()
    notes: list = []
    second = _open(target, notes)
    try:
        assert second.transport.facts["cleaned"] == 1 and any("killed runs" in n for n in notes)
        assert not run_dir.exists() and not _alive(sleeper)
    finally:
        second.close()
    assert _leftovers(tmp_path / "device-workdir") == []


# ---------------------------------------------------------------- (e) the runtime missing on the device


def test_a_device_without_the_runtime_says_what_to_install(sshd, model, tmp_path):
    bare = tmp_path / "bare-venv"
    base = subprocess.run([str(DEVICE_PYTHON), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([f"{base}/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    site = next(DEVICE_VENV.glob("lib/python3*/site-packages"))
    bare_site = next(bare.glob("lib/python3*/site-packages"))
    for name in ("numpy", "numpy.libs"):  # numpy only: the runtime is what is missing
        if (site / name).exists():
            (bare_site / name).symlink_to(site / name)
    out = tmp_path / "results.json"
    done = _bench([model, "--target", ssh_target(tmp_path, sshd, python=bare / "bin" / "python", cold_runs=1),
                   "-o", out], tmp_path)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    (result,) = _results(out)
    assert result["status"] == "error"
    assert "-m pip install onnxruntime` on the device" in result["status_detail"]
    assert "numpy" not in result["status_detail"].split("install")[1]  # numpy is there: not asked for


# ---------------------------------------------------------------- a probe past its timeout


def test_a_probe_past_its_timeout_is_killed_on_the_device_and_its_partial_kept(sshd, model, tmp_path):
    workdir = tmp_path / "device-workdir"
    target = ssh_target(tmp_path, sshd, workdir=workdir, min_iterations=10**9, min_duration_s=30.0,
                        max_duration_s=60.0, cold_runs=1)
    target.write_text(target.read_text().replace("timeout_s = 60", "timeout_s = 3"))
    out = tmp_path / "results.json"
    t0 = time.monotonic()
    done = _bench([model, "--target", target, "-o", out], tmp_path)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    assert time.monotonic() - t0 < 40
    (result,) = _results(out)
    assert result["status"] == "inconclusive" and "no result within 3 s on edgedev" in result["status_detail"]
    # What the probe measured before the device-side kill came back, kept apart and counted.
    assert result["partial"]["warm_samples"] > 0 and result["partial"]["cold_runs"] == 1
    assert _leftovers(workdir) == []
    left = subprocess.run(["pgrep", "-f", "probe/probe.py"], capture_output=True, text=True).stdout.split()
    assert not [p for p in left if str(workdir) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


# ---------------------------------------------------------------- (c) the link dropped mid-probe


def test_a_link_dropped_mid_probe_is_inconclusive_within_the_keepalive_bound(sshd, tmp_path):
    first, second = tiny_onnx(tmp_path / "m" / "first.onnx"), tiny_onnx(tmp_path / "m" / "second.onnx", layers=3)
    workdir = tmp_path / "device-workdir"
    target = ssh_target(tmp_path, sshd, workdir=workdir, min_iterations=20, min_duration_s=2.5,
                        max_duration_s=4.0, cold_runs=1)
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bench = subprocess.Popen([sys.executable, "-m", "edgedistill", "bench", str(first), str(second),
                              "--target", str(target), "-o", str(out)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The second model's warm loop is running on the device (its probe saves samples as it goes).
        deadline = time.monotonic() + 90
        while not list(workdir.glob("edgedistill-run-*/p2/result.json.partial.warm_ns")):
            assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        stopped = sshd.signal_sessions(signal.SIGSTOP)  # the link goes silent, as a pulled cable
        assert stopped
        t0 = time.monotonic()
        while bench.poll() is None and len(_results(out)) < 2:  # rewritten after each model
            assert time.monotonic() - t0 < 60
            time.sleep(0.05)
        noticed = time.monotonic() - t0
        stdout, stderr = bench.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if bench.poll() is None:
            bench.kill()
        sshd.signal_sessions(signal.SIGCONT)
    # Keepalives: 1 s x 2 to notice, then close() gives the dead session its own bound.
    bound = 1 * 2
    assert noticed < bound + 4 and took < bound + 20, (noticed, took, stderr[-2000:])
    assert bench.returncode == 5, stdout[-2000:] + stderr[-2000:]
    done, lost = _results(out)
    assert done["status"] == "ok"  # the model measured before the drop is kept
    assert lost["status"] == "inconclusive" and "lost the link" in lost["status_detail"]
    assert "PASS" not in stdout
    print(f"\nlink stopped mid warm loop: recorded as lost {noticed:.1f} s later, bench ended after {took:.1f} s (keepalive bound {bound} s), "
          f"exit {bench.returncode}: {lost['status_detail']}")
    # The next run on the device finds nothing of this one left running (its agent cleaned up
    # when sshd went away, or the next open's clean did).
    sshd.signal_sessions(signal.SIGKILL)
    runner = _open(target)
    runner.close()
    assert _leftovers(workdir) == []
    left = subprocess.run(["pgrep", "-f", "probe/probe.py"], capture_output=True, text=True).stdout.split()
    assert not [p for p in left if str(workdir) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


# ---------------------------------------------------------------- TensorRT engines built on the device

_FAKE_TRTEXEC = """#!/bin/sh
# Speaks the documented trtexec CLI: --onnx=FILE --saveEngine=FILE [--fp16] [--int8]; logs its argv.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
[ "$1" = "--help" ] && exit 0
echo "$*" >> "{log}"
for a in "$@"; do case "$a" in --saveEngine=*) printf 'engine' > "${{a#--saveEngine=}}";; esac; done
"""


def test_tensorrt_engines_are_built_on_the_device_by_its_trtexec_and_cached(sshd, model, tmp_path):
    from edgedistill.config import load_target

    log = tmp_path / "trtexec.log"
    fake = tmp_path / "bin dir" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(_FAKE_TRTEXEC.format(log=log))
    fake.chmod(0o755)
    target_file = ssh_target(tmp_path, sshd)
    target_file.write_text(target_file.read_text() + f"trtexec = {_toml(fake)}\n")
    request = {"backend": "tensorrt", "model": str(model), "model_files": [str(model)], "precision": "fp16"}
    facts = []
    for _ in range(2):  # a second run finds the engine in the device's cache
        runner = _open(target_file)
        try:
            facts.append(runner.engine_for(request))
        finally:
            runner.close()
    import hashlib

    sha = hashlib.sha256(model.name.encode() + b"\0" + model.read_bytes()).hexdigest()  # the ONNX and its files
    built, cached = facts
    assert not built.get("error") and built["cached"] is False and cached["cached"] is True
    engine = Path(built["path"])
    assert engine.parent == tmp_path / "device-workdir" / "edgedistill-engines"
    assert engine.name.startswith(f"{sha}-v100300-") and engine.name.endswith("-fp16.engine")
    assert engine.read_bytes() == b"engine" and cached["path"] == built["path"]
    (call,) = log.read_text().splitlines()  # built once, on the device, from the uploaded ONNX
    assert "--fp16" in call.split() and "--onnx=" in call and f"--saveEngine={engine}." in call
    assert load_target(target_file).ssh.trtexec == str(fake)


def test_tensorrt_itself_on_a_device(tmp_path):
    import shutil

    if shutil.which("trtexec") is None and not Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("no TensorRT here (trtexec is on a Jetson or a machine with an NVIDIA GPU): "
                    "the engine build is tested with a fake trtexec speaking its CLI")


def test_bench_onnx_with_tensorrt_on_an_ssh_target_needs_no_tensorrt_here(sshd, model, tmp_path):
    """`bench model.onnx --backend tensorrt --target <ssh device>`: the ONNX goes to the device,
    which builds the engine (this machine has no TensorRT and builds nothing); here the device has
    no TensorRT either, so the probe says what to install there (exit 5), not "cannot run here"."""
    target = ssh_target(tmp_path, sshd, cold_runs=1)
    target.write_text(target.read_text().replace('device = "CPU"', 'device = "CUDA"')
                      .replace('backends = ["onnxruntime"]', 'backends = ["tensorrt"]'))
    out = tmp_path / "results.json"
    done = _bench([model, "--backend", "tensorrt", "--target", target, "-o", out], tmp_path)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    (result,) = _results(out)
    assert result["backend"] == "tensorrt" and result["path"] == str(model)  # the ONNX, not an engine built here
    assert result["status"] == "error" and "-m pip install tensorrt" in result["status_detail"]
    assert "python3-libnvinfer" in result["status_detail"]  # JetPack's own package named too
    assert "cannot run here" not in done.stderr


def test_tensorrt_on_ssh_and_local_targets_in_one_run_is_refused(sshd, model, tmp_path):
    target = ssh_target(tmp_path, sshd, cold_runs=1)
    done = _bench([model, "--backend", "tensorrt", "--target", target, "--target", local_target(tmp_path),
                   "-o", tmp_path / "results.json"], tmp_path)
    assert done.returncode == 2 and "separate runs" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_compress_hands_an_ssh_device_the_verified_onnx_for_its_tensorrt_engines(tmp_path):
    from edgedistill.api import device_engine_sources
    from edgedistill.artifacts import Artifact

    onnx_fp32 = Artifact("onnx", tmp_path / "s32.onnx", "fp32", "student", "onnxruntime", {"verification": "ok"})
    onnx_int8 = Artifact("onnx", tmp_path / "s8.onnx", "int8", "student", "onnxruntime")
    others = [Artifact("openvino_ir", tmp_path / "s.xml", "fp32", "student", "openvino"),
              Artifact("tensorrt_plan", tmp_path / "here.engine", "fp16", "student", "tensorrt")]  # built HERE
    got = device_engine_sources([onnx_fp32, onnx_int8, *others])
    assert [(a.name, a.kind, a.path) for a in got] == [("student-fp32-tensorrt", "onnx", onnx_fp32.path),
                                                        ("student-int8-tensorrt", "onnx", onnx_int8.path)]
    assert got[0].meta["verification"] == "ok" and onnx_fp32.backend == "onnxruntime"  # copies, not changed
