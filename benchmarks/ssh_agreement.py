"""Cold start and warm latency measured through the SSH runner vs a local run (issue 11, item 3).

Starts OpenSSH's sshd on 127.0.0.1 (tests/sshd.py: its own host key, client key, pinned
known_hosts), and measures one ONNX model (a few MatMul+Relu layers, about a millisecond per
inference) in alternating rounds: through `runner = "ssh"` to that "device", whose Python is
`.venv-device` (Python 3.8, numpy and onnxruntime only), and on this machine by the same
interpreter and runtime, so the ratio compares the transport, not two Python or runtime versions.
Each round is one bench per side: `cold_runs` fresh processes, each a cold start and a warm run.

It prints, per side, the median over all processes of the cold start (process start to first
result) and of the warm-run medians, the fastest process of each, the SSH / local ratios, each
side's spread over its processes, and a two-sided Mann-Whitney p-value over processes (a small
p: the SSH runner's processes are not drawn from the same distribution as local ones).
The device is this machine, so the figures say what the runner adds (copying, the device agent,
the remote timeout), not what a board measures.

    python3 dev.py setup && .venv/bin/python benchmarks/ssh_agreement.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgedistill.artifacts import Artifact  # noqa: E402
from edgedistill.bench.harness import EvalSet, bench_artifact  # noqa: E402
from edgedistill.bench.runners import open_runner  # noqa: E402
from edgedistill.config import TargetConfig  # noqa: E402
from tests.sshd import ALIAS, DEVICE_PYTHON, Sshd, here_with_the_device_python, why_missing  # noqa: E402

WIDTH, LAYERS = 1024, 4  # ~4 M multiply-adds: about a millisecond on one core


def model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, name = [], [], "x"
    for i in range(LAYERS):
        w = numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) / 32).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("MatMul", [name, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        name = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, WIDTH])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def target(name: str, cold_runs: int, ssh: dict | None = None) -> TargetConfig:
    measurement = {"warmup_iterations": 20, "min_iterations": 300, "min_duration_s": 1.0, "max_duration_s": 20.0,
                   "cold_runs": cold_runs, "measure_cache": False, "max_load_per_core": 100.0,
                   "max_others_cpu_share": 1.0}
    extra = {"runner": "ssh", "ssh": ssh} if ssh else {}
    return TargetConfig(name=name, threads=1, backends=["onnxruntime"], measurement=measurement, **extra)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if why := why_missing():
        sys.exit(f"cannot start sshd: {why}")
    if not DEVICE_PYTHON.exists():
        sys.exit(f"no device venv at {DEVICE_PYTHON}: python3 dev.py test builds it")
    with tempfile.TemporaryDirectory(prefix="edgedistill-ssh-agreement-") as tmp:
        tmp = Path(tmp)
        sshd = Sshd(tmp / "sshd").start()
        try:
            onnx_path = model(tmp / "mlp.onnx")
            inputs = tmp / "inputs.npz"
            np.savez(inputs, x=np.random.default_rng(1).standard_normal((16, WIDTH)).astype(np.float32))
            art = Artifact(kind="onnx", path=onnx_path, backend="onnxruntime")
            ssh = {"host": ALIAS, "config": str(sshd.config), "python": str(DEVICE_PYTHON),
                   "workdir": str(tmp / "device")}
            (tmp / "device").mkdir()
            sides = {"ssh": target("ssh", args.cold_runs, ssh), "local": target("local", args.cold_runs)}
            got: dict[str, dict[str, list[float]]] = {s: {"cold": [], "warm": []} for s in sides}
            for i in range(args.rounds):
                for side in (("ssh", "local") if i % 2 == 0 else ("local", "ssh")):
                    runner = open_runner(sides[side]) if side == "ssh" else here_with_the_device_python()
                    try:
                        r = bench_artifact(art, sides[side], EvalSet(inputs), tmp / side / str(i), runner=runner)
                    finally:
                        runner.close()
                    if r["status"] not in ("ok", "invalid"):
                        sys.exit(f"{side} round {i + 1}: {r['status']}: {r['status_detail']}")
                    got[side]["cold"] += [run["total_ms"] for run in r["cold"]["runs"]]
                    got[side]["warm"] += [run["p50_ms"] for run in r["warm"]["runs"]]
                    print(f"  round {i + 1} {side:5}: cold {statistics.median(got[side]['cold'][-args.cold_runs:]):8.2f} ms, "
                          f"warm {statistics.median(got[side]['warm'][-args.cold_runs:]):.4f} ms", flush=True)
        finally:
            sshd.stop()
    from scipy.stats import mannwhitneyu

    summary = {}
    print(f"\n{'':22} {'ssh':>10} {'local':>10} {'ratio':>7}   (over {args.rounds} rounds x {args.cold_runs} processes)")
    for key, label in (("cold", "cold start, median"), ("warm", "warm median, median")):
        s, loc = statistics.median(got["ssh"][key]), statistics.median(got["local"][key])
        fs, fl = min(got["ssh"][key]), min(got["local"][key])
        p_value = float(mannwhitneyu(got["ssh"][key], got["local"][key]).pvalue)
        summary[key] = {"ssh_median_ms": s, "local_median_ms": loc, "ratio": s / loc,
                        "ssh_fastest_ms": fs, "local_fastest_ms": fl, "fastest_ratio": fs / fl, "p_value": p_value}
        print(f"{label:22} {s:10.3f} {loc:10.3f} {s / loc:7.3f}   spread ssh {fs:.3f}-{max(got['ssh'][key]):.3f}, "
              f"local {fl:.3f}-{max(got['local'][key]):.3f}; Mann-Whitney p = {p_value:.3f}")
        print(f"{label.split(',')[0] + ', fastest':22} {fs:10.3f} {fl:10.3f} {fs / fl:7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "samples": got}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
