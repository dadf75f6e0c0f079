"""Does `edgedistill bench model.tflite` agree with LiteRT's own benchmark? (issue 13, item 2)

Builds a ResNet-18-size CNN in plain torch (runtime_agreement.resnet18, random weights: latency
does not depend on them), converts it to a .tflite with edgedistill's LiteRT backend
(litert-torch, FP32), then, in alternating rounds on 1 thread:

- LiteRT: `litert-benchmark --model m.tflite --num_threads=1 --num_runs=N --warmup_runs=10
  --result_json=out.json`, the tool the ai-edge-litert wheel ships (its CompiledModel API with
  the XNNPACK CPU accelerator; it times `run_by_name` on buffers filled once);
- edgedistill: `edgedistill bench m.tflite --target agreement.toml --data inputs.npz` (the
  probe's Interpreter, XNNPACK delegate, `set_tensor` / `invoke` / `get_tensor` on varied inputs).

The method and verdict are runtime_agreement.py's (its helpers are reused): every tool runs in
the same number of fresh processes per round, the tools alternating which goes first; each
process gives one figure, its median latency; the verdict compares each tool's fastest process
(interference on a shared VM can only add time), with the ratio of the medians across processes
printed beside it. Exits 1 when the fastest-process ratio is outside +-5 %. Init (model load:
`CompiledModel.from_file` vs `Interpreter` + `allocate_tensors`) and first inference are printed
side by side.

    .venv/bin/python benchmarks/litert_agreement.py                  # 3 rounds, ResNet-18 at 224x224
    .venv/bin/python benchmarks/litert_agreement.py --rounds 5 --duration 5 --json out.json

Where the clocks are: both tools time a Python call around the runtime's C++ invoke; edgedistill's
call also copies the input in and the output out (~30 us for a 3x224x224 image, 0.1 % of ~40 ms).
`litert-benchmark` writes its figures rounded to 0.01 ms: for a 40 ms model that is 0.03 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from runtime_agreement import (  # noqa: E402
    PROCESSES,
    compare,
    processes,
    resnet18,
    run_edgedistill,
    target_file,
)

from edgedistill.bench.runners.local import thread_env  # noqa: E402

TOLERANCE = 0.05
SIZE = 224
INPUTS = 16
WARMUP_RUNS = 10


def build_tflite(folder: Path, size: int) -> Path:
    """The CNN as a torch.export program, converted by edgedistill's LiteRT backend (FP32)."""
    import torch

    from edgedistill.backends.base import get_backend
    from edgedistill.exporters import export_program

    torch.manual_seed(0)
    program = export_program(resnet18(), torch.randn(1, 3, size, size), folder / "resnet18.pt2", dynamic_batch=False)
    art = get_backend("litert").export(program, folder, precision="fp32", calibration=None)
    return Path(art.path)


def litert_benchmark_command(model: Path, threads: int, runs: int, result_json: Path) -> list[str]:
    """The wheel's console script beside this interpreter (else its module, the same code)."""
    script = Path(sys.executable).parent / "litert-benchmark"
    head = [str(script)] if script.exists() else (
        [shutil.which("litert-benchmark")] if shutil.which("litert-benchmark")
        else [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"])
    return [*head, f"--model={model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={WARMUP_RUNS}", f"--result_json={result_json}"]


def parse_result(path: Path) -> dict:
    """litert-benchmark's --result_json as this script's figures (ms)."""
    latency = json.loads(Path(path).read_text())["latency"]
    return {"median_ms": latency["median_ms"], "read_ms": 0.0, "compile_ms": latency["init_ms"],
            "first_inference_ms": latency["warmup_first_ms"], "runs": latency["num_runs"]}


def run_litert_benchmark(model: Path, threads: int, runs: int, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgedistill-litert-benchmark-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = litert_benchmark_command(model, threads, runs, out)
        done = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads),
                              timeout=timeout_s, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"litert-benchmark exited {done.returncode}: {done.stderr.strip()[-500:]}")
        figures = parse_result(out)
    figures["command"] = " ".join(cmd[:-1])  # without the temporary result path
    return figures


def runs_for(model: Path, threads: int, duration_s: float, timeout_s: float) -> int:
    """litert-benchmark takes a run count, edgedistill a duration: a short first run of the tool
    (not counted) gives the count that lasts `duration_s`."""
    median = run_litert_benchmark(model, threads, 20, timeout_s)["median_ms"]
    return max(50, round(duration_s * 1000.0 / max(median, 0.01)))


def verdict(summary: dict, tolerance: float = TOLERANCE) -> dict:
    """runtime_agreement.compare's summary with this script's tolerance applied."""
    summary["agrees"] = abs(summary["ratio"] - 1) <= tolerance
    return summary


def print_summary(s: dict, tool_command: str) -> None:
    t, e = s["tool"], s["edgedistill"]
    print(f"\nlatency, ms (each process's median); pass = fastest-process ratio within +-{TOLERANCE:.0%}")
    print(f"  fastest process: litert-benchmark {t['fastest_ms']:.3f}, edgedistill {e['fastest_ms']:.3f}, "
          f"ratio {s['ratio']:.3f}: {'pass' if s['agrees'] else 'FAIL'}")
    print(f"  median across processes: litert-benchmark {t['median_ms']:.3f}, edgedistill {e['median_ms']:.3f}, "
          f"ratio {s['median_ratio']:.3f}; spread {t['spread_ms'][0]:.2f}-{t['spread_ms'][1]:.2f} | "
          f"{e['spread_ms'][0]:.2f}-{e['spread_ms'][1]:.2f}")
    print("init (model load) / first inference, ms, medians: litert-benchmark | edgedistill")
    print(f"  init  {t['compile_ms']:.2f} | {e['read_ms'] + e['compile_ms']:.2f}   "
          "(CompiledModel.from_file | Interpreter + allocate_tensors)")
    print(f"  first {t['first_inference_ms']:.2f} | {e['first_inference_ms']:.2f}")
    print(f"commands:\n  {tool_command}\n  edgedistill {s['edgedistill_command']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per warm run (each tool, each process)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=SIZE, help="image side (224: ~40 ms a call on 1 thread here)")
    p.add_argument("--keep", type=Path, help="build the model file here and keep it")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import numpy as np

    from edgedistill.bench.environment import cpu_model, load_average

    print(f"{cpu_model()}, {os.cpu_count()} cores, load average {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgedistill-litert-agreement-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = build_tflite(folder, args.size)
        data = folder / "inputs.npz"
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.standard_normal((INPUTS, 3, args.size, args.size)).astype(np.float32))
        target = target_file(folder, args.threads, args.duration)
        timeout = args.duration * 40 + 300
        runs = runs_for(model, args.threads, args.duration, timeout)
        tool_command = " ".join(litert_benchmark_command(model, args.threads, runs, Path("out.json")))
        summary = verdict(compare(
            f"litert: litert-benchmark vs bench .tflite ({PROCESSES} processes a round)", args.rounds,
            lambda: processes(lambda: run_litert_benchmark(model, args.threads, runs, timeout), PROCESSES),
            lambda: run_edgedistill(model, target, data, folder / "ed" / "results.json", timeout)))
    summary["tool_command"] = tool_command
    print_summary(summary, tool_command)
    if args.json:
        args.json.write_text(json.dumps({"tolerance": TOLERANCE, "results": [summary]}, indent=1))
    if not summary["agrees"]:
        print(f"\noutside +-{TOLERANCE:.0%}: ratio {summary['ratio']:.3f}")
    return 0 if summary["agrees"] else 1


if __name__ == "__main__":
    sys.exit(main())
