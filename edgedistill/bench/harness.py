"""Plans and runs the measurements of every artifact on a target; the probe does the timing.

For a student artifact: one full probe (cold start, warm loop, accuracy, integrity checks), then
more cold-start-only probes up to `cold_runs`, then `cold_runs` probes with the runtime's model
cache empty (miss) and as many with it filled (hit), then one warm probe per sweep point. The
teacher, the reference, gets the full probe only. Raw samples are kept in the record.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.artifacts import Artifact, sha256_file
from edgedistill.bench import stats
from edgedistill.bench.environment import governor, load_average, usable_cores
from edgedistill.bench.page_cache import evict
from edgedistill.bench.runners.local import ProbeOutcome, run_probe
from edgedistill.config import TargetConfig
from edgedistill.probe.runtimes import CACHE_MECHANISMS
from edgedistill.report.results import COLD_PARTS
from edgedistill.stages import file_record

_SLOW_CLOCK_GOVERNORS = ("powersave", "conservative")


@dataclass
class EvalSet:
    """The held-out inputs every artifact is measured on, with labels and the teacher's answers."""

    inputs_path: Path
    labels: np.ndarray
    teacher_predictions: np.ndarray


def probe_request(artifact: Artifact, target: TargetConfig, inputs: Path, mode: str, outputs: Path | None,
                  *, threads: int | None = None, batch_size: int = 1, cache: dict | None = None) -> dict:
    m = target.measurement
    return {
        "backend": artifact.backend,
        "model": str(Path(artifact.path).resolve()),
        "precision": artifact.precision,
        "threads": threads or target.threads,
        "device": target.device,
        "inputs": str(inputs),
        "mode": mode,
        "outputs_path": str(outputs) if outputs else None,
        "batch_size": batch_size,
        "cache": cache,
        "warmup_iterations": m.warmup_iterations,
        "min_iterations": m.min_iterations,
        "min_duration_s": m.min_duration_s,
        "max_duration_s": m.max_duration_s,
    }


def cold_record(runs: list[dict]) -> dict:
    """Every run's parts, their total (time to first result), and median/min/max of each."""
    for r in runs:
        r["total_ms"] = round(sum(r[p] for p in COLD_PARTS if r.get(p) is not None), 4)
    record: dict = {"runs": runs}
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


# ---------------------------------------------------------------- validity


def _device_problem(requested: str, used: str) -> str | None:
    """Why the device the runtime used is not the one asked for, or None."""
    req = "CUDA" if requested.upper() == "GPU" else requested.upper()
    ran = [d.strip().upper() for d in used.split(",") if d.strip()]
    if not ran:
        return None
    if req.split(":")[0] in ("AUTO", "MULTI", "HETERO"):
        wanted = req.split(":", 1)[1].split(",") if ":" in req else []
        if all(d.startswith("CPU") for d in ran) and (not wanted or not wanted[0].startswith("CPU")):
            return f"{requested} chose {used}: the model ran on the CPU, not an accelerator"
        return None
    if req == "CUDA":
        ran = [d.replace("GPU", "CUDA") for d in ran]
    wrong = [d for d in ran if not d.startswith(req)]
    return f"the runtime ran on {used!r}, the target asked for {requested!r}" if wrong else None


def measurement_problems(warm: dict, full: dict, target: TargetConfig, conditions: dict) -> list[dict]:
    """Named reasons a latency measurement cannot be trusted (empty: it can)."""
    m = target.measurement
    problems = []
    n = len(warm["samples_ms"])
    if n < m.min_iterations or warm["hit_max_duration"] and warm["duration_s"] < m.min_duration_s:
        problems.append({"kind": "run_too_short", "detail": (
            f"{n} warm iterations in {warm['duration_s']:.1f} s; needs {m.min_iterations} and "
            f"{m.min_duration_s:g} s ({max(0, m.min_iterations - n)} more iterations): raise max_duration_s")})
    need = stats.min_samples_for(99)
    if n < need:
        problems.append({"kind": "too_few_samples",
                         "detail": f"{n} samples cannot estimate p99 ({need - n} more iterations needed)"})
    fallback = _device_problem(target.device, str(full["session"].get("device", "")))
    if fallback and not target.allow_fallback:
        problems.append({"kind": "device_fallback", "detail": fallback + " (set allow_fallback to accept)"})
    load = conditions.get("load_average_before")
    cores = conditions.get("usable_cores") or 1
    if load and load[0] / cores > m.max_load_per_core:
        problems.append({"kind": "busy_machine", "detail": (
            f"1-minute load average {load[0]:.2f} on {cores} usable cores before the run "
            f"(limit {m.max_load_per_core:g} per core): other work was competing for the CPU")})
    gov = conditions.get("governor")
    if gov in _SLOW_CLOCK_GOVERNORS and not m.allow_unstable_clocks:
        problems.append({"kind": "unstable_clocks", "detail": (
            f"CPU governor {gov!r} lowers clocks under light load; set it to 'performance' "
            "or allow_unstable_clocks")})
    sampled = full.get("sampled_outputs")
    if sampled and (sampled["argmax_mismatches"] or sampled["max_abs_diff"] > m.sampled_output_max_abs):
        problems.append({"kind": "outputs_changed", "detail": (
            f"outputs sampled during the latency run differ from the accuracy run: "
            f"{sampled['argmax_mismatches']} of {sampled['checked']} top-1 answers changed, "
            f"max abs diff {sampled['max_abs_diff']:.3g}")})
    same = warm.get("same_input")
    if same and same["ratio_to_varied"] < m.caching_ratio:
        problems.append({"kind": "caching_suspected", "detail": (
            f"one repeated input ran at {same['ratio_to_varied']:.2f}x the median of varied inputs "
            f"(limit {m.caching_ratio:g}x): the runtime may be answering from a cache")})
    return problems


# ---------------------------------------------------------------- runs


def skipped_result(backend: str, target: TargetConfig, reason: str) -> dict:
    """The record of a backend the target asks for but that cannot run here."""
    return {"artifact": f"student-*-{backend}", "role": "student", "precision": "*", "backend": backend,
            "path": None, "size_bytes": None, "threads": target.threads, "batch_size": 1,
            "status": "skipped", "status_detail": reason, "problems": []}


class _Runner:
    """Runs probes for one artifact, evicting its files first when asked (--cold-disk)."""

    def __init__(self, artifact: Artifact, target: TargetConfig, evalset: EvalSet, cold_disk: bool):
        self.artifact, self.target, self.evalset = artifact, target, evalset
        self.cold_disk = cold_disk
        self.evictions: list[str] = []  # why a run could not be disk-cold, if any

    def probe(self, mode: str, outputs: Path | None = None, *, evict_also: list[Path] = (),
              **kwargs) -> ProbeOutcome:
        if self.cold_disk and mode != "warm":
            eviction = evict([*self.artifact.files(), *evict_also])
            if not eviction.ok:
                self.evictions.append(eviction.detail)
        req = probe_request(self.artifact, self.target, self.evalset.inputs_path, mode, outputs, **kwargs)
        return run_probe(req, threads=req["threads"], timeout_s=self.target.measurement.timeout_s)

    def cold_kind(self) -> tuple[str, str]:
        if not self.cold_disk:
            return "warm-disk", "model files may be in the OS page cache (as after a recent export or run)"
        if self.evictions:
            return "warm-disk", f"--cold-disk asked, but eviction failed: {self.evictions[0]}"
        return "cold-disk", "model files evicted from the page cache before every cold run"


def _failure(outcome: ProbeOutcome) -> tuple[str, str]:
    return ("inconclusive" if outcome.status in ("timeout", "crashed") else "error"), outcome.detail


def _partial(outcome: ProbeOutcome) -> dict | None:
    """What a probe that timed out had measured (the partial file it rewrites as it goes),
    with counts. Kept apart from `cold` and `warm`, so nothing reads it as a full measurement:
    the result stays inconclusive."""
    r = outcome.result if outcome.status == "timeout" else None
    if not r:
        return None
    samples = (r.get("warm") or {}).get("samples_ms") or []
    cold = r.get("cold")
    return {"warm_samples": len(samples), "cold_runs": 1 if cold else 0, "cold": cold,
            "warm_samples_ms": samples}


def _cache_record(runner: _Runner, work_dir: Path) -> dict:
    """Cold start with the runtime's model cache empty (miss) and filled (hit)."""
    art, n = runner.artifact, runner.target.measurement.cold_runs
    root = work_dir / "model-cache" / art.name
    shutil.rmtree(root, ignore_errors=True)
    record: dict = {"mechanism": CACHE_MECHANISMS[art.backend]}
    runs: dict[str, list[dict]] = {"miss": [], "hit": []}
    try:
        for i in range(n):  # every miss starts from an empty cache; the last one fills it for the hits
            folder = root / f"miss-{i}"
            folder.mkdir(parents=True)
            outcome = runner.probe("cold", cache={"mode": "miss", "dir": str(folder)})
            if outcome.status != "ok":
                return {**record, "error": f"cache miss run: {outcome.detail}"}
            runs["miss"].append(outcome.result["cold"])
        for _ in range(n):
            cached = [p for p in folder.rglob("*") if p.is_file()]
            outcome = runner.probe("cold", cache={"mode": "hit", "dir": str(folder)}, evict_also=cached)
            if outcome.status != "ok":
                return {**record, "error": f"cache hit run: {outcome.detail}"}
            runs["hit"].append(outcome.result["cold"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    miss, hit = cold_record(runs["miss"]), cold_record(runs["hit"])
    saving = miss["total_ms"]["median"] - hit["total_ms"]["median"]
    return {**record, "miss": miss, "hit": hit, "saving_ms": round(saving, 3),
            "saving_pct": round(100.0 * saving / miss["total_ms"]["median"], 2)}


def _sweep_points(target: TargetConfig) -> list[tuple[int, int]]:
    threads = target.sweep.threads or [target.threads]
    batches = target.sweep.batch_sizes or [1]
    return [(t, b) for t in threads for b in batches if (t, b) != (target.threads, 1)]


def _sweep_point(runner: _Runner, threads: int, batch: int) -> dict:
    point = {"threads": threads, "batch_size": batch, "status": "ok", "detail": "", "summary": None,
             "samples_per_s": None}
    outcome = runner.probe("warm", threads=threads, batch_size=batch)
    if outcome.status != "ok":
        unsupported = outcome.result and outcome.result.get("error_type") == "UnsupportedBatch"
        point.update(status="unsupported" if unsupported else "error",
                     detail=outcome.result["error"] if unsupported else outcome.detail)
        return point
    warm = outcome.result["warm"]
    summary = stats.summarize(warm["samples_ms"])
    point.update(summary=summary, samples_ms=warm["samples_ms"], duration_s=warm["duration_s"],
                 samples_per_s=round(batch * summary["throughput_per_s"], 2),
                 session=outcome.result["session"])
    return point


def bench_artifact(
    artifact: Artifact, target: TargetConfig, evalset: EvalSet, work_dir: Path,
    on_step: Callable[[str], None] = lambda s: None, *, cold_disk: bool = False,
) -> dict:
    record = {
        "artifact": artifact.name,
        "role": artifact.role,
        "precision": artifact.precision,
        "backend": artifact.backend,
        "path": str(artifact.path),
        "size_bytes": artifact.size_bytes(),
        # What was measured, byte for byte: the main file's sha256, and every file's.
        "sha256": sha256_file(artifact.path),
        "files": [file_record(f) for f in artifact.files()],
        "threads": target.threads,
        "batch_size": 1,
        "status": "ok",
        "status_detail": "",
        "problems": [],
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    outputs = work_dir / f"{artifact.name}.outputs.npy"
    runner = _Runner(artifact, target, evalset, cold_disk)
    student = artifact.role == "student"

    on_step(f"{artifact.name}: cold start, warm loop, accuracy")
    conditions = {"load_average_before": load_average(), "usable_cores": usable_cores(),
                  "governor": governor()}
    outcome = runner.probe("full", outputs)
    if outcome.status != "ok":
        record["status"], record["status_detail"] = _failure(outcome)
        if (partial := _partial(outcome)) is not None:
            record["partial"] = partial
            record["status_detail"] += (f" (partial: {partial['warm_samples']} warm samples, "
                                        f"{partial['cold_runs']} cold run(s) kept)")
        return record
    full = outcome.result
    record["conditions"] = conditions

    runs = [full["cold"]]
    # The teacher is the reference, never gated: one cold start is enough to compare against.
    for i in range(1, target.measurement.cold_runs if student else 1):
        on_step(f"{artifact.name}: cold start {i + 1}/{target.measurement.cold_runs}")
        outcome = runner.probe("cold")
        if outcome.status != "ok":
            record["status"], record["status_detail"] = _failure(outcome)
            break
        runs.append(outcome.result["cold"])
    cache = None
    if student and target.measurement.measure_cache and artifact.backend in CACHE_MECHANISMS:
        on_step(f"{artifact.name}: cold start with the model cache, miss and hit")
        cache = _cache_record(runner, work_dir)
    kind, kind_detail = runner.cold_kind()
    record["cold"] = {"kind": kind, "kind_detail": kind_detail, **cold_record(runs), "cache": cache}

    warm = full["warm"]
    summary = stats.summarize(warm["samples_ms"])
    same = warm.pop("same_input_samples_ms")
    same_summary = stats.summarize(same)
    warm["same_input"] = {"summary": same_summary,
                          "ratio_to_varied": round(same_summary["p50_ms"] / summary["p50_ms"], 4)}
    record["warm"] = {**warm, "summary": summary}
    record["integrity"] = {"sampled_outputs": full.get("sampled_outputs"),
                           "caching_ratio": warm["same_input"]["ratio_to_varied"]}
    record["memory"] = {"peak_rss_mb": full["peak_rss_mb"], "rss_after_load_mb": full["cold"]["rss_after_load_mb"]}
    record["accuracy"] = _accuracy(outputs, evalset)
    record["session"] = full["session"]
    record["runtime_version"] = full["runtime_version"]
    record["sweep"] = []
    if student:
        for threads, batch in _sweep_points(target):
            on_step(f"{artifact.name}: sweep {threads} thread(s), batch {batch}")
            record["sweep"].append(_sweep_point(runner, threads, batch))
    if record["status"] == "ok":
        record["problems"] = measurement_problems(record["warm"], full, target, conditions)
        if record["problems"]:
            record["status"] = "invalid"
            record["status_detail"] = "; ".join(p["detail"] for p in record["problems"])
    return record
