"""The cold start a device would see: ExecuTorch through the native runner vs the Python runtime
(issue 10, item 6).

On the built-in student's .pte (from --run RUN_DIR, else made now with `edgedistill compress
--epochs 1` in a temporary folder, ~2-3 min), times process start to first result in fresh
processes through the harness's own probe path, alternating native and Python so both see the
same machine: the native runner (bench/native.py, built on first use) and ExecuTorch's Python
runtime (which imports torch). Each figure is the median over --runs fresh processes of the
results' `cold.total_ms` (interpreter or exec-to-main + import + program read + method load +
first inference), printed with its parts and the ratio. The claim, fixed before any run: the
native runner's median is <= 50 ms. Exits 1 if it is not, 2 if something could not run.

    .venv/bin/python benchmarks/executorch_cold_start.py                        # makes a run, ~4 min
    .venv/bin/python benchmarks/executorch_cold_start.py --run runs/r --runs 7  # an existing run, ~1 min
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LIMIT_MS = 50.0
PARTS = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "first_inference_ms")


def make_run(folder: Path) -> Path:
    print(f"making the built-in student's artifacts in {folder} (edgedistill compress --epochs 1) ...", flush=True)
    r = subprocess.run([sys.executable, "-m", "edgedistill", "compress", "--epochs", "1", "--out-dir", str(folder),
                        "--run-name", "r", "-q"], capture_output=True, text=True, check=False)
    run = folder / "r"
    # compress exits 1/4/5 on a failed or unmeasurable gate; the artifacts are what is needed here.
    if not (run / "export" / "executorch" / "student-fp32-executorch.pte").exists():
        sys.exit(f"error: compress made no ExecuTorch student (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run folder with export/executorch/student-fp32-executorch.pte")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per runner (default 5)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from edgedistill.artifacts import Artifact
    from edgedistill.bench import native
    from edgedistill.bench.harness import cold_record, probe_request
    from edgedistill.bench.runners.local import run_probe
    from edgedistill.config import TargetConfig

    with tempfile.TemporaryDirectory(prefix="et-cold-") as tmp:
        run = args.run or make_run(Path(tmp))
        pte = run / "export" / "executorch" / "student-fp32-executorch.pte"
        inputs = run / "data" / "test_inputs.npy"
        if not pte.exists() or not inputs.exists():
            print(f"error: expected {pte} and {inputs}; found {'neither' if not pte.exists() else inputs.name + ' missing'}",
                  file=sys.stderr)
            return 2
        try:
            built = native.build()
        except native.BuildFailed as e:
            print(f"error: the native runner cannot be built here: {e}", file=sys.stderr)
            return 2
        print(f"native runner: {built.binary} ({'cached' if built.reused else 'built now'}; "
              f"executorch {built.record['executorch_version']}, {built.record['compiler']})")
        artifact = Artifact(kind="pte", path=pte, precision="fp32", role="student", backend="executorch", meta={})
        request = probe_request(artifact, TargetConfig(name="cold", threads=args.threads), inputs, "cold", None)
        commands = {"native": native.NativeCommand(built), "python": None}
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        for i in range(args.runs):
            for name, command in commands.items():  # alternated: both see the same machine
                outcome = run_probe(request, threads=args.threads, timeout_s=300, command=command)
                if outcome.status != "ok":
                    print(f"error: {name} run {i + 1}: {outcome.status}: {outcome.detail}", file=sys.stderr)
                    return 2
                runs[name].append(outcome.result["cold"])
            print(f"  run {i + 1}/{args.runs}: native {sum(runs['native'][-1][p] or 0 for p in PARTS):.1f} ms, "
                  f"python {sum(runs['python'][-1][p] or 0 for p in PARTS):.0f} ms", flush=True)

    records = {name: cold_record(r) for name, r in runs.items()}
    print(f"\nExecuTorch process start to first result, {pte.name}, {args.threads} thread(s), "
          f"median of {args.runs} fresh processes each (load average {os.getloadavg()[0]:.2f}):")
    header = f"{'runner':<8} {'total':>10} {'min':>9} {'max':>9}  " + " ".join(f"{p[:-3]:>16}" for p in PARTS)
    print(header)
    for name, rec in records.items():
        t = rec["total_ms"]
        parts = " ".join(f"{rec[p]['median']:>13.2f} ms" for p in PARTS)
        print(f"{name:<8} {t['median']:>7.2f} ms {t['min']:>6.2f} ms {t['max']:>6.2f} ms  {parts}")
    native_ms = records["native"]["total_ms"]["median"]
    python_ms = records["python"]["total_ms"]["median"]
    print(f"\nnative {native_ms:.1f} ms vs Python runtime {python_ms:.0f} ms: {python_ms / native_ms:.0f}x faster "
          f"to the first result; claim native <= {LIMIT_MS:g} ms: {'PASS' if native_ms <= LIMIT_MS else 'FAIL'}")
    return 0 if native_ms <= LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
