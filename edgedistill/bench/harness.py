"""Plans and runs the measurements of every artifact on a target; the probe does the timing.

Each artifact gets `cold_runs` fresh processes: the first also runs the warm loop and the
accuracy pass, the rest measure cold start only. Raw samples are kept in the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.artifacts import Artifact
from edgedistill.bench import stats
from edgedistill.bench.runners.local import ProbeOutcome, run_probe
from edgedistill.config import TargetConfig

COLD_PARTS = ("interpreter_ms", "import_ms", "load_ms", "first_inference_ms")


@dataclass
class EvalSet:
    """The held-out inputs every artifact is measured on, with labels and the teacher's answers."""

    inputs_path: Path
    labels: np.ndarray
    teacher_predictions: np.ndarray


def probe_request(artifact: Artifact, target: TargetConfig, inputs: Path, mode: str, outputs: Path | None) -> dict:
    m = target.measurement
    return {
        "backend": artifact.backend,
        "model": str(Path(artifact.path).resolve()),
        "threads": target.threads,
        "device": target.device,
        "inputs": str(inputs),
        "mode": mode,
        "outputs_path": str(outputs) if outputs else None,
        "warmup_iterations": m.warmup_iterations,
        "min_iterations": m.min_iterations,
        "min_duration_s": m.min_duration_s,
        "max_duration_s": m.max_duration_s,
    }


def _cold_record(runs: list[dict]) -> dict:
    for r in runs:
        r["total_ms"] = sum(r[p] for p in COLD_PARTS if r.get(p) is not None)
    record = {"runs": runs}
    for part in (*COLD_PARTS, "total_ms"):
        record[part] = stats.median_and_spread([r.get(part) for r in runs])
    return record


def _accuracy(outputs_path: Path, evalset: EvalSet) -> dict:
    preds = np.load(outputs_path).argmax(axis=1)
    return {
        "n": int(preds.size),
        "top1": float((preds == evalset.labels).mean()),
        "teacher_agreement": float((preds == evalset.teacher_predictions).mean()),
    }


def _validity(warm: dict, target: TargetConfig, session: dict) -> tuple[str, str]:
    m = target.measurement
    n = len(warm["samples_ms"])
    if n < m.min_iterations or warm["hit_max_duration"] and warm["duration_s"] < m.min_duration_s:
        return "invalid", (
            f"{n} warm iterations in {warm['duration_s']:.1f} s; needs {m.min_iterations} "
            f"and {m.min_duration_s:g} s ({max(0, m.min_iterations - n)} more iterations): "
            "raise max_duration_s"
        )
    need = stats.min_samples_for(99)
    if n < need:
        return "invalid", f"{n} samples cannot estimate p99 ({need - n} more iterations needed)"
    used = str(session.get("device", "")).upper()
    if used and not used.startswith(target.device.upper()):
        return "invalid", f"runtime ran on {used!r}, target asked for {target.device!r}"
    return "ok", ""


def skipped_result(backend: str, target: TargetConfig, reason: str) -> dict:
    """The record of a backend the target asks for but that cannot run here."""
    return {"artifact": f"student-*-{backend}", "role": "student", "precision": "*", "backend": backend,
            "path": None, "size_bytes": None, "threads": target.threads, "status": "skipped",
            "status_detail": reason}


def bench_artifact(
    artifact: Artifact, target: TargetConfig, evalset: EvalSet, work_dir: Path,
    on_step: Callable[[str], None] = lambda s: None,
) -> dict:
    record = {
        "artifact": artifact.name,
        "role": artifact.role,
        "precision": artifact.precision,
        "backend": artifact.backend,
        "path": str(artifact.path),
        "size_bytes": artifact.size_bytes(),
        "threads": target.threads,
        "status": "ok",
        "status_detail": "",
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    outputs = work_dir / f"{artifact.name}.outputs.npy"
    runs: list[dict] = []
    full: dict | None = None
    # The teacher is the reference, never gated: one cold start is enough to compare against.
    cold_runs = target.measurement.cold_runs if artifact.role == "student" else 1
    for i in range(cold_runs):
        mode = "full" if i == 0 else "cold"
        on_step(f"{artifact.name}: {'cold start, warm loop, accuracy' if i == 0 else f'cold start {i + 1}'}")
        req = probe_request(artifact, target, evalset.inputs_path, mode, outputs)
        outcome: ProbeOutcome = run_probe(req, threads=target.threads, timeout_s=target.measurement.timeout_s)
        if outcome.status != "ok":
            status = "inconclusive" if outcome.status in ("timeout", "crashed") else "error"
            record.update(status=status, status_detail=outcome.detail)
            break
        runs.append(outcome.result["cold"])
        if i == 0:
            full = outcome.result
    if runs:
        record["cold"] = _cold_record(runs)
    if full is None:
        return record

    warm = full["warm"]
    record["warm"] = {**warm, "summary": stats.summarize(warm["samples_ms"])}
    record["memory"] = {"peak_rss_mb": full["peak_rss_mb"], "rss_after_load_mb": full["cold"]["rss_after_load_mb"]}
    record["accuracy"] = _accuracy(outputs, evalset)
    record["session"] = full["session"]
    record["runtime_version"] = full["runtime_version"]
    if record["status"] == "ok":
        record["status"], record["status_detail"] = _validity(warm, target, full["session"])
    return record
