"""The runtimes apps embed, side by side on the built-in task, from one run: warm p50 and cold
start (fresh process to first result, in parts) of every FP32 and INT8 student artifact on ONNX
Runtime (.onnx and the mobile .ort), OpenVINO, ExecuTorch (native runner) and LiteRT, then the
.ort session creation beside the .onnx one.

    python benchmarks/mobile_runtimes.py                           # runs compress first (minutes)
    python benchmarks/mobile_runtimes.py runs/mobile/results.json  # reads a results file alone

The run: `edgedistill compress` with the config and target this script writes into --out-dir
(1 thread, batch 1, every backend above); nothing is estimated, every figure is a measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BACKENDS = ["onnxruntime", "ort-mobile", "openvino", "executorch", "litert"]

CONFIG = f"""\
[distill]
epochs = 3
[export]
backends = {json.dumps(BACKENDS)}
[bench]
targets = ["mobile-cpu.toml"]
"""

TARGET = f"""\
name = "mobile-cpu"
description = "this machine, 1 thread, every runtime a phone app embeds that runs on Linux"
backends = {json.dumps(BACKENDS)}
threads = 1
[measurement]
cold_runs = 5
measure_cache = false
"""


def run_compress(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "edgedistill.toml").write_text(CONFIG)
    (out_dir / "mobile-cpu.toml").write_text(TARGET)
    cmd = [sys.executable, "-m", "edgedistill", "compress", "--out-dir", "runs", "--run-name", "mobile"]
    print("+ (in", out_dir, ")", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=out_dir)
    # 1 a budget failed, 4 the machine was busy (marked INVALID), 5 no budget decided (this target
    # sets none): the figures are measured and printed all the same, with each row's status.
    if code not in (0, 1, 4, 5):
        sys.exit(f"compress exited {code}")
    return out_dir / "runs" / "mobile" / "results.json"


def _median(cold: dict, part: str) -> float | None:
    value = (cold or {}).get(part) or {}
    return value.get("median")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> list[str]:
    lines = []
    for target in results["targets"]:
        rows = [r for r in target["results"] if r["role"] == "student"]
        lines += [f"target {target['name']}: student artifacts, 1 thread, batch 1 "
                  f"(load average {results['environment'].get('load_average')})",
                  "| artifact | status | p50 ms | cold start ms | read ms | session/compile ms "
                  "| first inference ms | top-1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (BACKENDS.index(r["backend"]) if r["backend"] in BACKENDS
                                             else 99, r["precision"])):
            warm = (r.get("warm") or {}).get("summary") or {}
            cold = r.get("cold") or {}
            top1 = (r.get("accuracy") or {}).get("top1")
            lines.append(f"| {r['artifact']} | {r['status']} | {_fmt(warm.get('p50_ms'))} "
                         f"| {_fmt(_median(cold, 'total_ms'), 1)} | {_fmt(_median(cold, 'read_ms'), 2)} "
                         f"| {_fmt(_median(cold, 'compile_ms'), 2)} "
                         f"| {_fmt(_median(cold, 'first_inference_ms'), 2)} "
                         f"| {'—' if top1 is None else f'{top1:.2%}'} |")
        by_name = {r["artifact"]: r for r in target["results"]}
        for role, precision in (("student", "fp32"), ("student", "int8"), ("teacher", "fp32")):
            onnx = by_name.get(f"{role}-{precision}-onnxruntime")
            ort = next((r for name, r in by_name.items()
                        if name.startswith(f"{role}-{precision}-ort-mobile")), None)
            if not onnx or not ort:
                continue
            a, b = _median(onnx.get("cold"), "compile_ms"), _median(ort.get("cold"), "compile_ms")
            if a and b:
                lines.append(f"{role} {precision}: ONNX Runtime session creation {b:.2f} ms from {ort['artifact']} "
                             f"vs {a:.2f} ms from the .onnx ({b / a:.2f}x)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="a results.json to read instead of running")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/mobile-bench"),
                        help="where the run goes when no results file is given")
    args = parser.parse_args()
    from edgedistill.report.results import load_results

    path = args.results or run_compress(args.out_dir)
    for line in table(load_results(path)):
        print(line)


if __name__ == "__main__":
    main()
