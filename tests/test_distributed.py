"""Data-parallel distillation (issue 4, item 8): 2 CPU processes over gloo train like 1 process.

Each run starts real worker processes through torch's elastic launcher (or torchrun itself), so
these tests take a few seconds each. With a student without BatchNorm, 2 processes take the same
optimizer steps as 1 up to float rounding; with BatchNorm (per-slice statistics) they reach the
same accuracy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file

MODELS = textwrap.dedent("""
    from torch import nn

    def teacher():
        return nn.Sequential(nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 10))

    def student():
        return nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.ReLU(), nn.Linear(32, 10))

    def kill_rank1_once():
        # An identity augmentation that SIGKILLs rank 1 at its 12th batch, once per marker file.
        import os
        import signal

        calls = [0]

        def augment(x):
            calls[0] += 1
            marker = os.environ.get("KILL_MARKER")
            if marker and os.environ.get("RANK") == "1" and calls[0] == 12 and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return x

        return augment

    def bn_student():
        return nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
""")


WEAK_TEACHER_ALLOWED = "[teacher]\nallow_weak_teacher = true\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An entrypoint module with an MLP teacher (with a weights file) and students, for builtin:digits."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    (tmp_path / "ddp_models.py").write_text(MODELS)
    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_models

        torch.manual_seed(1)
        save_file(ddp_models.teacher().state_dict(), tmp_path / "teacher.safetensors")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ddp_models", None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    # The random MLP teacher is at chance (RELIABILITY 30 would stop it): these tests are about DDP.
    (tmp_path / "edgedistill.toml").write_text(WEAK_TEACHER_ALLOWED)
    return tmp_path, env


def mlp_args(root, out, *extra):
    return ["distill", "--teacher", "ddp_models:teacher", "--teacher-weights", root / "teacher.safetensors",
            "--student", "ddp_models:student", "--epochs", "2", "--out-dir", root / out, *extra]


def run_dir(root, out):
    return root / out / "default" / "distill"


def history(folder):
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def max_weight_difference(a, b):
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(project):
    """The reference: the same run in one process."""
    root, env = project
    r = run_cli(mlp_args(root, "one"), cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    return run_dir(root, "one")


def test_two_processes_take_the_steps_one_process_takes(project, one_process):
    root, env = project
    two = run_cli(mlp_args(root, "two", "--nproc-per-node", "2"), cwd=root, env=env)
    assert two.returncode == 0, two.stderr
    assert "2 processes" in two.stderr
    a, b = one_process, run_dir(root, "two")
    # Same global batches, gradients averaged and weighted by slice: equal up to float rounding.
    assert max_weight_difference(a, b) < 1e-5
    ha, hb = history(a), history(b)
    assert len(hb) == 2  # rank 0 alone writes the history: no duplicated epochs
    for ra, rb in zip(ha, hb, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["val_acc"] == ra["val_acc"]
    saved = torch.load(b / "checkpoint.pt", weights_only=True)
    assert len(saved["rngs"]) == 2  # every rank's RNG state, for an exact resume


def test_ranks_that_disagree_on_the_teacher_are_refused(project):
    root, env = project
    # No weights file: each process draws its own random teacher.
    args = mlp_args(root, "bad", "--nproc-per-node", "2")
    i = args.index("--teacher-weights")
    del args[i:i + 2]
    r = run_cli(args, cwd=root, env=env)
    assert r.returncode == 2, r.stderr
    assert "do not agree on the teacher" in r.stderr and "Traceback" not in r.stderr
    assert not (run_dir(root, "bad") / "student.safetensors").exists()


def test_a_worker_error_keeps_its_exit_code_and_one_line(project):
    root, env = project
    r = run_cli([*mlp_args(root, "shape", "--nproc-per-node", "2"), "--data", "builtin:nope"], cwd=root, env=env)
    assert r.returncode == 2, r.stderr
    assert sum(line.startswith("error:") for line in r.stderr.splitlines()) == 1  # rank 0's only
    assert "builtin:nope" in r.stderr and "Traceback" not in r.stderr


def test_two_nodes_meet_at_the_rendezvous_endpoint(project, one_process):
    """The README's multi-node command, with two 'nodes' on this machine sharing one folder."""
    root, env = project
    endpoint = f"127.0.0.1:{free_port()}"
    node = [sys.executable, "-m", "edgedistill",
            *map(str, mlp_args(root, "nodes", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-endpoint", endpoint, "--rdzv-id", "test-job"))]
    nodes = [subprocess.Popen(node, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("student weights:") == 1  # the node with rank 0 reports
    assert "rank 0 wrote the student" in "".join(err for _, err in outputs)
    assert max_weight_difference(run_dir(root, "nodes"), one_process) < 1e-5


def test_torchrun_runs_the_same_training(project, one_process):
    root, env = project
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "edgedistill", *map(str, mlp_args(root, "torchrun"))],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("student weights:") == 1
    assert max_weight_difference(run_dir(root, "torchrun"), one_process) < 1e-5


def test_batchnorm_student_reaches_one_process_accuracy(project):
    """BatchNorm normalises each rank's slice on its own: the same quality, not the same bits."""
    root, env = project
    acc = {}
    for n in ("1", "2"):
        args = mlp_args(root, f"bn{n}", "--nproc-per-node", n, "--json")
        args[args.index("ddp_models:student")] = "ddp_models:bn_student"
        r = run_cli(args, cwd=root, env=env)
        assert r.returncode == 0, r.stderr
        acc[n] = json.loads(r.stdout)["student_val_acc"]
    assert acc["1"] > 0.8
    assert abs(acc["2"] - acc["1"]) <= 0.03, acc


def test_several_nodes_need_an_endpoint(tmp_path):
    r = run_cli(["distill", "--nnodes", "2", "--out-dir", tmp_path], cwd=tmp_path)
    assert r.returncode == 2 and "--rdzv-endpoint" in r.stderr and "Traceback" not in r.stderr


def test_nnodes_must_be_a_count_or_a_range(tmp_path):
    r = run_cli(["distill", "--nnodes", "2:1", "--out-dir", tmp_path], cwd=tmp_path)
    assert r.returncode == 2 and "MIN:MAX" in r.stderr


def test_batch_too_small_for_the_processes(project, tmp_path):
    root, env = project
    (tmp_path / "small.toml").write_text("[distill]\nbatch_size = 3\n")
    r = run_cli([*mlp_args(root, "small", "--nproc-per-node", "2"), "-c", tmp_path / "small.toml"],
                cwd=root, env=env)
    assert r.returncode == 2 and "batch_size 3 is too small for 2 processes" in r.stderr, r.stderr


def killer_args(root, out, *extra):
    """2 processes, checkpoints every 5 steps, and rank 1 killed at its 12th step (if KILL_MARKER)."""
    config = root / "killer.toml"
    config.write_text(WEAK_TEACHER_ALLOWED
                      + '[distill]\ncheckpoint_every_steps = 5\naugment = ["ddp_models:kill_rank1_once"]\n')
    return [*mlp_args(root, out, "--nproc-per-node", "2"), "-c", config, *extra]


def test_a_killed_worker_is_restarted_and_resumes_from_the_checkpoint(project, tmp_path):
    """RELIABILITY 15: a worker SIGKILLed mid-epoch; --max-restarts brings the group back, and it
    continues from the step-10 checkpoint to the weights of a run that was never interrupted."""
    root, env = project
    reference = run_cli(killer_args(root, "unkilled"), cwd=root, env=env)
    assert reference.returncode == 0, reference.stderr
    marker = tmp_path / "killed"
    r = run_cli(killer_args(root, "killed", "--max-restarts", "1"), cwd=root,
                env={**env, "KILL_MARKER": str(marker)})
    assert marker.exists()  # the kill happened
    assert r.returncode == 0, r.stderr
    assert "resuming from epoch 1 step 10" in r.stderr
    assert max_weight_difference(run_dir(root, "killed"), run_dir(root, "unkilled")) == 0.0


def test_a_killed_worker_without_restarts_is_a_clear_failure(project, tmp_path):
    root, env = project
    r = run_cli(killer_args(root, "dead"), cwd=root, env={**env, "KILL_MARKER": str(tmp_path / "killed")})
    assert r.returncode == 3, r.stderr
    assert "worker rank 1 was killed by SIGKILL; restarts used: 0" in r.stderr
    assert "resumes from the last checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert (run_dir(root, "dead") / "checkpoint.pt").is_file()  # what a rerun continues from
    assert not (run_dir(root, "dead") / "student.safetensors").exists()
