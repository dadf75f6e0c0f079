"""Session creation of an .ort (ONNX Runtime's mobile format, ort-mobile backend) beside the same
model's .onnx (issue 13 item 3): the cold-start part `compile_ms` the harness records.

Exports the built-in digits student and teacher (random weights: session creation does not
depend on their values) to ONNX, converts each to .ort with the ort-mobile backend for this
machine's platform (and arm, which runs here too without the NCHWc layouts), then starts
--runs fresh probe processes per file, alternating the files so all see the same machine, in
the probe's "describe" mode (import, read, session creation; nothing run). Prints the median
read_ms and compile_ms of each file, the .ort/.onnx ratio of compile_ms, the file sizes, and
the median of creating the same session again in one process (the optimizer's share alone).
This is a timing comparison, so it lives here and not in the unit tests. ~1 min.

    .venv/bin/python benchmarks/ort_mobile_session.py            # 9 fresh processes per file
    .venv/bin/python benchmarks/ort_mobile_session.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


def _artifacts(folder: Path) -> dict[str, dict[str, Path]]:
    import torch

    from edgedistill.backends import ort_mobile
    from edgedistill.exporters import export_onnx
    from edgedistill.zoo import digits_student, digits_teacher

    here = ort_mobile.this_machine() or "amd64"
    example = torch.zeros(1, 1, 32, 32)
    out: dict[str, dict[str, Path]] = {}
    for role, model in (("student", digits_student()), ("teacher", digits_teacher(pretrained=False))):
        torch.manual_seed(0)
        onnx = export_onnx(model.eval(), example, folder / f"{role}.onnx", role=role)
        files = {".onnx": onnx.path}
        for platform in dict.fromkeys((here, "arm")):
            art = ort_mobile.export(onnx, folder / "ort", precision="fp32", calibration=None, target_platform=platform)
            files[f".ort ({platform})"] = art.path
        out[role] = files
    return out


def _cold(path: Path) -> dict:
    from edgedistill.bench.runners.local import run_probe

    backend = "ort-mobile" if path.suffix == ".ort" else "onnxruntime"
    outcome = run_probe({"backend": backend, "model": str(path), "precision": "fp32", "threads": 1,
                         "device": "CPU", "mode": "describe"}, threads=1, timeout_s=120)
    if outcome.status != "ok":
        sys.exit(f"error: the probe could not load {path}: {outcome.detail}")
    return outcome.result["cold"]


def _in_process_ms(files: dict[str, Path], repeats: int) -> dict[str, float]:
    """Median time of creating the session again and again in this process, the files alternating:
    the optimizer's share without the process's one-off costs (thread pools, allocator, EP set-up)."""
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    data = {kind: path.read_bytes() for kind, path in files.items()}
    times: dict[str, list[float]] = {kind: [] for kind in files}
    for _ in range(repeats):
        for kind, model in data.items():
            start = time.perf_counter()
            ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            times[kind].append((time.perf_counter() - start) * 1000)
    return {kind: statistics.median(t) for kind, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per file (default 9)")
    args = parser.parse_args()
    from edgedistill.bench.environment import load_average

    with tempfile.TemporaryDirectory(prefix="edgedistill-ort-session-") as tmp:
        models = _artifacts(Path(tmp))
        print(f"load average before: {load_average()}; {args.runs} fresh probe processes per file, 1 thread")
        for role, files in models.items():
            samples: dict[str, list[dict]] = {k: [] for k in files}
            for _ in range(args.runs):
                for kind, path in files.items():  # alternating: every file sees the same machine
                    samples[kind].append(_cold(path))
            onnx_compile = statistics.median(r["compile_ms"] for r in samples[".onnx"])
            again = _in_process_ms(files, 3 * args.runs)
            print(f"\n{role} (digits {role}, 1x1x32x32): fresh process = the probe's cold-start compile_ms; "
                  "in process = the same session created again in one process")
            print(f"  {'file':14s} {'size KiB':>9s} {'read ms':>8s} {'fresh ms':>9s} {'vs .onnx':>9s} "
                  f"{'in process ms':>14s} {'vs .onnx':>9s}")
            for kind, runs in samples.items():
                compile_ms = statistics.median(r["compile_ms"] for r in runs)
                read_ms = statistics.median(r["read_ms"] for r in runs)
                print(f"  {kind:14s} {files[kind].stat().st_size / 1024:9.1f} {read_ms:8.2f} {compile_ms:9.2f} "
                      f"{compile_ms / onnx_compile:8.2f}x {again[kind]:14.2f} {again[kind] / again['.onnx']:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
