"""Issue 14's figures on the built-in task, from one run folder: 50 % channel pruning with its
recovery against the unpruned student, INT8 against FP32 on ONNX Runtime and OpenVINO, and a
search that finds a candidate for a budget the default student misses.

    python benchmarks/compression.py --out-dir /tmp/compression   # runs both commands (minutes)
    python benchmarks/compression.py --out-dir /tmp/compression --report-only   # reprints

Step 1 is `edgedistill compress` with [compress.prune] ratio = 0.5 (FP32 and INT8, ONNX Runtime
and OpenVINO, 1 thread, batch 1): one results file holds the pruned student (gated) and the
unpruned one (the reference) measured in the same run. Step 2 is `edgedistill compress --search`
in the same run folder (every stage of step 1 reused, only measured again) against the budget
below, which the default student (unpruned, FP32) misses. Every figure is a measurement; ratios
are of medians measured in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BACKENDS = ["onnxruntime", "openvino"]
SEARCH_P90_MS = 0.35  # the budget the default student misses (its p90 is about 0.6 ms here)
SEARCH_DROP_PT = 5.0

CONFIG = f"""\
[export]
backends = {json.dumps(BACKENDS)}
[compress]
precisions = ["fp32", "int8"]
[compress.prune]
ratio = 0.5
"""
SEARCH = """\
[search]
prune_ratios = [0.25, 0.5, 0.75]
"""

TARGET = """\
name = "{name}"
description = "this machine, 1 thread"
backends = {backends}
threads = 1
[measurement]
cold_runs = {cold_runs}
measure_cache = false
[budgets]
{budgets}
"""


def _write_target(folder: Path, name: str, budgets: str, cold_runs: int) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TARGET.format(name=name, backends=json.dumps(BACKENDS), budgets=budgets, cold_runs=cold_runs))
    return path


def _compress(folder: Path, target: Path, *flags: str) -> None:
    cmd = [sys.executable, "-m", "edgedistill", "compress", "--config", "edgedistill.toml", "--target", target.name,
           "--out-dir", "runs", "--run-name", "compression", *flags]
    print("+ (in", folder, ")", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=folder)
    # 1: a budget failed; 4: the machine was busy (INVALID): the figures are printed all the same.
    if code not in (0, 1, 4):
        sys.exit(f"compress exited {code}")


def _p50(r: dict) -> float | None:
    return ((r.get("warm") or {}).get("summary") or {}).get("p50_ms")


def _top1(r: dict) -> float | None:
    return (r.get("accuracy") or {}).get("top1")


def pruning_and_int8(results: dict) -> list[str]:
    out = []
    prune = (results["reference"].get("distill") or {}).get("pruning") or {}
    if prune:
        out.append(f"pruning {prune['form']} ({prune['importance']}, {prune['recovery_epochs']} recovery epochs): "
                   f"params {prune['params_before']:,} -> {prune['params_after']:,}, MACs "
                   f"{prune['macs_before'] / 1e6:.2f} M -> {prune['macs_after'] / 1e6:.2f} M; validation top-1 "
                   f"{prune['val_before']:.2%} -> {prune['val_pruned']:.2%} pruned -> {prune['val_after']:.2%} recovered")
    by = {r["artifact"]: r for t in results["targets"] for r in t["results"]}
    out.append(f"{'figure':<44} {'p50 ms':>15} {'ratio':>6} {'goal':>6} {'top-1 drop pt':>14} {'status':>10}")
    for backend in BACKENDS:
        pairs = [("pruned 50 % vs unpruned, fp32", f"student-prune0.5-fp32-{backend}", f"student-fp32-{backend}", 0.6),
                 ("pruned 50 % vs unpruned, int8", f"student-prune0.5-int8-{backend}", f"student-int8-{backend}", 0.6),
                 ("int8 vs fp32 (unpruned)", f"student-int8-{backend}", f"student-fp32-{backend}", 0.65),
                 ("int8 vs fp32 (pruned 50 %)", f"student-prune0.5-int8-{backend}", f"student-prune0.5-fp32-{backend}",
                  0.65)]
        for label, head, base, goal in pairs:
            h, b = by.get(head), by.get(base)
            if not h or not b or _p50(h) is None or _p50(b) is None:
                out.append(f"{backend + ': ' + label:<44} not measured")
                continue
            ratio = _p50(h) / _p50(b)
            drop = None if _top1(h) is None else (_top1(b) - _top1(h)) * 100
            out.append(f"{backend + ': ' + label:<44} {_p50(h):>6.3f} / {_p50(b):<6.3f} {ratio:>6.2f} {goal:>6.2f} "
                       f"{'—' if drop is None else f'{drop:+.2f}':>14} {h['status'] + '/' + b['status']:>10} "
                       f"{'MET' if ratio <= goal and (drop or 0) <= 1 else 'MISSED'}")
    return out


def search_summary(results: dict) -> list[str]:
    from edgedistill.search import rows_for_display, search_lines

    s = results.get("search")
    if not s:
        return ["no search in this results file"]
    headers, rows = rows_for_display(results)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = [f"search budget: p90_ms <= {SEARCH_P90_MS}, accuracy_drop_pt <= {SEARCH_DROP_PT} (target 'search')"]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [headers, *rows]]
    default = next((r for r in s["table"] if r["candidate"] == "student-fp32-onnxruntime"), None)
    if default:
        lines.append(f"default student (student-fp32-onnxruntime): {default['verdict']}, misses "
                     f"{', '.join(default['misses']) or 'nothing'} (p90 {default['p90_ms']} ms)")
    return lines + search_lines(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/compression"))
    parser.add_argument("--report-only", action="store_true", help="print the figures of an earlier run")
    args = parser.parse_args()
    folder = args.out_dir
    run = folder / "runs" / "compression"
    pruned_file = folder / "pruning-results.json"
    if not args.report_only:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "edgedistill.toml").write_text(CONFIG)
        # Step 1: the loose local budgets, so the run is a measurement of both students.
        _compress(folder, _write_target(folder, "local", "p90_ms = 100.0", cold_runs=5))
        pruned_file.write_bytes((run / "results.json").read_bytes())  # step 2 replaces results.json
        (folder / "edgedistill.toml").write_text(CONFIG + SEARCH)
        _compress(folder, _write_target(folder, "search", f"p90_ms = {SEARCH_P90_MS}\naccuracy_drop_pt = "
                                        f"{SEARCH_DROP_PT}", cold_runs=3), "--search")
    env = json.loads(pruned_file.read_text())["environment"]
    print(f"\nmachine: {env.get('cpu_model', '?')}, load {env.get('load_average', '?')}")
    print("\n".join(pruning_and_int8(json.loads(pruned_file.read_text()))))
    print()
    print("\n".join(search_summary(json.loads((run / "results.json").read_text()))))


if __name__ == "__main__":
    main()
