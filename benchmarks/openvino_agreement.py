"""Does edgedistill's harness agree with OpenVINO's own `benchmark_app`? (issue 3, item 3)

On the same OpenVINO IR, with the same threads, the sync API and one stream, the harness's median
warm latency should be within +-5 % of benchmark_app's. For each IR and thread count this runs
both tools in turn (benchmark_app, harness, harness, benchmark_app, ... so that a machine that
drifts slows both alike), takes the median of each tool's per-round medians, and prints their
ratio beside each tool's read, compile and first-inference times. Exits 1 if a ratio is outside
+-5 %.

    .venv/bin/python benchmarks/openvino_agreement.py                      # built-in models
    .venv/bin/python benchmarks/openvino_agreement.py --model m.xml --threads 1 2 --json out.json
    .venv/bin/python benchmarks/openvino_agreement.py --probe-dir /tmp/probe   # a modified probe
        (a folder holding probe.py and runtimes.py: measures a proposed change to the probe)

Without --model it exports the built-in digits teacher (shipped weights) and digits student
(seeded random weights: latency does not depend on the values) to FP32 IRs the way
`edgedistill compress` does (ONNX with a dynamic batch axis, then openvino.convert_model).

Like for like, both tools compile the same model with the same configuration:
- benchmark_app gets `-infer_precision f32`: on a CPU with AVX512_BF16 or AMX its default is
  bf16, while the harness runs FP32 and INT8 artifacts with INFERENCE_PRECISION_HINT=f32 (see
  probe/runtimes.py), which alone made the student about 1.8x slower than benchmark_app here.
- a dynamic batch axis is given to benchmark_app with `-data_shape` only (batch 1), not `-shape`,
  which would reshape the model to a static one: the harness compiles the IR as it is.
- both get the probe's thread environment (OMP_NUM_THREADS and friends).

What still differs is where the clock is. benchmark_app reports `InferRequest.latency`, taken in
C++ around the inference itself; the harness times the whole Python call `Session.run(x)`
(input check, binding the input, the call, copying the output out), which is what an application
pays. That difference is a fixed cost per call, so it matters for small models only. The
"wall per iteration" column (loop duration / count) shows it from the other side: benchmark_app's
own Python loop costs more per iteration than the latency it reports.

Load times: both tools time read_model and compile_model, but the harness's compile part is
everything from the runtime's import to a ready session, so it also holds loading the CPU plugin
library, which benchmark_app does before its clock starts (it queries the device in its step 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing edgedistill
    sys.path.insert(0, str(ROOT))

from edgedistill.bench.runners.local import thread_env  # after ROOT is on sys.path

TOLERANCE = 0.05  # |harness / benchmark_app - 1| allowed
BATCH = 1
RANDOM_INPUTS = 256  # varied inputs for a model that does not take digits images

# ---------------------------------------------------------------- benchmark_app's output

_PREFIX = re.compile(r"^\[\s*[A-Z]+\s*\]\s?")  # "[ INFO ] ", "[ WARNING ] "
_TOOK = re.compile(r"^(Read|Compile|Reshape|Import) model took ([\d.]+) ms")
_FIRST = re.compile(r"^First inference took ([\d.]+) ms")
_COUNT = re.compile(r"^Count:\s+(\d+) iterations")
_DURATION = re.compile(r"^Duration:\s+([\d.]+) ms")
# benchmark_app prints latencies in us when their average is under 1 ms, in ms otherwise.
_LATENCY = re.compile(r"^\s*(Median|Average|Min|Max):\s+([\d.]+) (ms|us)\s*$")
_THROUGHPUT = re.compile(r"^Throughput:\s+([\d.]+) FPS")
# The compiled model's properties (step 8): "  INFERENCE_NUM_THREADS: 1".
_PROPERTY = re.compile(r"^\s+([A-Z][A-Z0-9_]+): (.*)$")


def parse_benchmark_app(text: str) -> dict:
    """benchmark_app's console output as numbers (ms, iterations, FPS) and its printed config.

    Raises ValueError when the output has no median latency (benchmark_app failed).
    """
    found: dict = {"properties": {}}
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw.rstrip())
        if m := _TOOK.match(line):
            found.setdefault(f"{m.group(1).lower()}_ms", float(m.group(2)))
        elif m := _FIRST.match(line):
            found.setdefault("first_inference_ms", float(m.group(1)))
        elif m := _COUNT.match(line):
            found.setdefault("count", int(m.group(1)))
        elif m := _DURATION.match(line):
            found.setdefault("duration_ms", float(m.group(1)))
        elif m := _LATENCY.match(line):
            value = float(m.group(2)) / (1000.0 if m.group(3) == "us" else 1.0)
            # setdefault: the overall figures come first; -pcseq adds per-shape groups after.
            found.setdefault(f"{m.group(1).lower()}_ms", value)
        elif m := _THROUGHPUT.match(line):
            found.setdefault("throughput_fps", float(m.group(1)))
        elif m := _PROPERTY.match(line):
            found["properties"].setdefault(m.group(1), m.group(2).strip())
    if "median_ms" not in found:
        tail = " | ".join(text.strip().splitlines()[-5:])
        raise ValueError(f"no median latency in benchmark_app's output: {tail}")
    return found


# ---------------------------------------------------------------- models and inputs


def build_builtin_irs(out_dir: Path) -> list[tuple[str, Path]]:
    """FP32 IRs of the built-in teacher and student, exported as `edgedistill compress` does."""
    import torch

    from edgedistill import zoo
    from edgedistill.backends import openvino
    from edgedistill.exporters import export_onnx

    torch.manual_seed(0)  # the student ships no weights: seeded, so every run builds the same IR
    irs = []
    for role, factory in (("teacher", zoo.digits_teacher), ("student", zoo.digits_student)):
        onnx = export_onnx(factory(), torch.zeros(1, 1, 32, 32), out_dir / f"{role}.onnx", role=role)
        ir = openvino.export(onnx, out_dir, precision="fp32", calibration=None)
        irs.append((f"digits_{role}", Path(ir.path)))
    return irs


def ir_input(xml: Path) -> tuple[list[int | None], str]:
    """The IR's first input: shape (None for a dynamic dim) and numpy dtype name."""
    import numpy as np
    import openvino as ov

    port = ov.Core().read_model(str(xml)).inputs[0]
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return shape, np.dtype(port.get_element_type().to_dtype()).name


def batch_one_shape(shape: list[int | None], xml: Path) -> list[int]:
    if not shape or any(d is None for d in shape[1:]):
        raise SystemExit(f"{xml}: input shape {shape} has dynamic dims past the batch axis; "
                         "only a dynamic batch can be fixed here")
    return [BATCH, *shape[1:]]


def make_inputs(shape: list[int], dtype: str, path: Path) -> Path:
    """Varied inputs, as the harness always uses: the held-out digits images where the model takes
    them, else seeded random normal values. benchmark_app fills its one tensor randomly itself."""
    import numpy as np

    if shape[1:] == [1, 32, 32] and dtype == "float32":
        from edgedistill.config import DataConfig
        from edgedistill.data import load_data

        x = load_data(DataConfig(), seed=0).x_test.numpy()
    else:
        x = np.random.default_rng(0).standard_normal((RANDOM_INPUTS, *shape[1:]))
    np.save(path, np.ascontiguousarray(x, dtype=dtype))
    return path


# ---------------------------------------------------------------- the two tools


def benchmark_app_path() -> str:
    beside = Path(sys.executable).with_name("benchmark_app")  # the venv's console script
    found = str(beside) if beside.exists() else shutil.which("benchmark_app")
    if not found:
        raise SystemExit("benchmark_app not found: pip install openvino (it ships the command)")
    return found


def benchmark_app_command(xml: Path, threads: int, duration_s: int, data_shape: list[int] | None) -> list[str]:
    cmd = [benchmark_app_path(), "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1",
           "-nireq", "1", "-nthreads", str(threads), "-api", "sync", "-t", str(duration_s),
           # The harness runs FP32 and INT8 artifacts with f32 (bf16 would change the outputs).
           "-infer_precision", "f32"]
    if data_shape:  # a dynamic batch: give the data's shape, keep the model as compiled
        cmd += ["-data_shape", "[" + ",".join(map(str, data_shape)) + "]"]
    return cmd


def run_benchmark_app(cmd: list[str], threads: int, timeout_s: float) -> dict:
    # The probe's own environment, so neither tool gets thread pools the other does not.
    done = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads),
                          timeout=timeout_s, check=False)  # a failure is reported below, with its output
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise SystemExit(f"benchmark_app exited {done.returncode}: {tail}")
    parsed = parse_benchmark_app(done.stdout + done.stderr)
    parsed["wall_per_iteration_ms"] = parsed["duration_ms"] / parsed["count"]
    return parsed


def harness_request(xml: Path, inputs: Path, outputs: Path, threads: int, duration_s: int,
                    options: dict) -> dict:
    """The harness's own request for a full probe of the IR, with this run's length."""
    from edgedistill.artifacts import Artifact
    from edgedistill.bench.harness import probe_request
    from edgedistill.config import TargetConfig

    target = TargetConfig(name="agreement", threads=threads, measurement={
        "warmup_iterations": 20, "min_iterations": 200,
        "min_duration_s": duration_s, "max_duration_s": duration_s * 3})
    artifact = Artifact("openvino_ir", xml, "fp32", backend="openvino")
    return {**probe_request(artifact, target, inputs, "full", outputs, batch_size=BATCH), "options": options}


def run_harness(request: dict, threads: int, timeout_s: float) -> dict:
    from edgedistill.bench.runners.local import run_probe

    outcome = run_probe(request, threads=threads, timeout_s=timeout_s)
    if outcome.status != "ok":
        raise SystemExit(f"the probe failed ({outcome.status}): {outcome.detail}")
    r = outcome.result
    cold, warm, session = r["cold"], r["warm"], r["session"]
    parts = session.get("load_parts_ms", {})
    return {
        "median_ms": statistics.median(warm["samples_ms"]),
        "count": len(warm["samples_ms"]),
        "duration_ms": warm["duration_s"] * 1000.0,
        "wall_per_iteration_ms": warm["duration_s"] * 1000.0 / len(warm["samples_ms"]),
        "read_ms": cold.get("read_ms", parts.get("read_ms")),
        "compile_ms": cold.get("compile_ms", parts.get("compile_ms")),
        "first_inference_ms": cold["first_inference_ms"],
        "loop_overhead_ms": warm.get("loop_overhead_ms"),
        "harness_overhead_ms": warm.get("harness_overhead_ms"),
        "threads": session.get("threads"),
        "inference_precision": session.get("inference_precision"),
    }


# ---------------------------------------------------------------- one comparison


def compare(name: str, xml: Path, threads: int, args: argparse.Namespace, work: Path) -> dict:
    shape, dtype = ir_input(xml)
    data_shape = batch_one_shape(shape, xml)
    inputs = make_inputs(data_shape, dtype, work / f"{xml.stem}-inputs.npy")
    cmd = benchmark_app_command(xml, threads, args.duration, data_shape if shape[0] is None else None)
    request = harness_request(xml, inputs, work / f"{xml.stem}-outputs.npy", threads, args.duration,
                              args.harness_options)
    timeout_s = args.duration * 3 + 120
    rounds = []
    for i in range(args.rounds):
        load = os.getloadavg()[0]
        # ABBA order: a machine that slowly speeds up or slows down favours neither tool.
        first_ba = i % 2 == 0
        ba = run_benchmark_app(cmd, threads, timeout_s) if first_ba else None
        h = run_harness(request, threads, timeout_s)
        if not first_ba:
            ba = run_benchmark_app(cmd, threads, timeout_s)
        rounds.append({"load_1min": round(load, 2), "benchmark_app": ba, "harness": h})
        print(f"  {name} threads={threads} round {i + 1}: benchmark_app {ba['median_ms']:.4f} ms, "
              f"harness {h['median_ms']:.4f} ms, load {load:.2f}", flush=True)
    return summarize(name, xml, threads, cmd, rounds)


def _median_of(rounds: list[dict], tool: str, key: str) -> float | None:
    values = [r[tool].get(key) for r in rounds if r[tool].get(key) is not None]
    return statistics.median(values) if values else None


def summarize(name: str, xml: Path, threads: int, cmd: list[str], rounds: list[dict]) -> dict:
    summary: dict = {"model": name, "xml": str(xml), "threads": threads,
                     "benchmark_app_command": " ".join(cmd), "rounds": rounds}
    for tool in ("benchmark_app", "harness"):
        summary[tool] = {key: _median_of(rounds, tool, key)
                         for key in ("median_ms", "wall_per_iteration_ms", "read_ms", "compile_ms",
                                     "first_inference_ms")}
    for key in ("loop_overhead_ms", "harness_overhead_ms"):
        summary["harness"][key] = _median_of(rounds, "harness", key)
    summary["benchmark_app"]["inference_precision"] = (
        rounds[0]["benchmark_app"]["properties"].get("INFERENCE_PRECISION_HINT"))
    summary["harness"]["inference_precision"] = rounds[0]["harness"]["inference_precision"]
    ratio = summary["harness"]["median_ms"] / summary["benchmark_app"]["median_ms"]
    summary["ratio"] = round(ratio, 4)
    summary["agrees"] = abs(ratio - 1.0) <= TOLERANCE
    loads = [r["load_1min"] for r in rounds]
    summary["load_1min"] = [min(loads), max(loads)]
    return summary


# ---------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _us(value_ms: float | None) -> str:
    return "-" if value_ms is None else f"{value_ms * 1000:.2f} us"


def print_table(results: list[dict]) -> None:
    w = max(len(s["model"]) for s in results)
    print(f"\nmedian latency (median of per-round medians); pass = within +-{TOLERANCE:.0%}")
    print(f"{'model':{w}} {'thr':>3} {'benchmark_app':>14} {'harness':>10} {'ratio':>7}  verdict"
          "   wall per iteration: benchmark_app / harness")
    for s in results:
        verdict = "pass" if s["agrees"] else "FAIL"
        ba, h = s["benchmark_app"], s["harness"]
        print(f"{s['model']:{w}} {s['threads']:>3} {ba['median_ms']:>11.4f} ms {h['median_ms']:>7.4f} ms "
              f"{s['ratio']:>7.3f}  {verdict:7}   {ba['wall_per_iteration_ms']:.4f} / "
              f"{h['wall_per_iteration_ms']:.4f} ms")
    print("\nload and first inference, ms (benchmark_app / harness)")
    print(f"{'model':{w}} {'thr':>3} {'read':>17} {'compile':>17} {'first inference':>17}")
    for s in results:
        ba, h = s["benchmark_app"], s["harness"]
        cells = [f"{_ms(ba[k])} / {_ms(h[k])}" for k in ("read_ms", "compile_ms", "first_inference_ms")]
        print(f"{s['model']:{w}} {s['threads']:>3} {cells[0]:>17} {cells[1]:>17} {cells[2]:>17}")
    print("\nharness's own cost per iteration; inference precision; 1-min load during the rounds")
    for s in results:
        h = s["harness"]
        print(f"{s['model']:{w}} {s['threads']:>3} loop {_us(h['loop_overhead_ms'])}, "
              f"loop + input check {_us(h['harness_overhead_ms'])}; precision benchmark_app "
              f"{s['benchmark_app']['inference_precision']}, harness {h['inference_precision']}; "
              f"load {s['load_1min'][0]:.2f}-{s['load_1min'][1]:.2f}")


def environment() -> dict:
    from edgedistill.backends.base import package_version
    from edgedistill.bench.environment import cpu_model, load_average

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "openvino": package_version("openvino"),
            "python": platform.python_version(), "load_before": load_average()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", type=Path, default=[],
                   help="an OpenVINO IR .xml (repeatable); default: the built-in teacher and student")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--duration", type=int, default=5, help="seconds of timed loop per tool and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write every round and the summary here")
    p.add_argument("--harness-options", type=json.loads, default={},
                   help='extra OpenVINO compile config for the harness only, as JSON, for experiments '
                        '(e.g. \'{"ENABLE_CPU_PINNING": false}\')')
    p.add_argument("--probe-dir", type=Path,
                   help="run the probe from this folder (probe.py + runtimes.py), to measure a "
                        "proposed change to the probe against the same benchmark_app runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_dir:
        from edgedistill.bench.runners import local

        local.PROBE_DIR = args.probe_dir.resolve()
    env = environment()
    print(f"{env['cpu']}, {env['cores']} cores, openvino {env['openvino']}, "
          f"load average {env['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgedistill-ov-agreement-") as tmp:
        work = Path(tmp)
        models = [(p.stem, p) for p in args.model] or build_builtin_irs(work)
        results = [compare(name, xml, threads, args, work)
                   for name, xml in models for threads in args.threads]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "tolerance": TOLERANCE,
                                         "results": results}, indent=1))
    failed = [f"{s['model']} threads={s['threads']} ratio {s['ratio']:.3f}"
              for s in results if not s["agrees"]]
    if failed:
        print(f"\noutside +-{TOLERANCE:.0%}: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
