"""Plans and runs the measurements of every artifact on a target; the probe does the timing.

For a student artifact: one full probe (cold start, warm loop, accuracy, integrity checks), then
more fresh processes up to `cold_runs`, each timing its cold start AND a warm loop (with the
caching check), then `cold_runs` probes with the runtime's model cache empty (miss) and as many
with it filled (hit), then one warm probe per sweep point. The teacher, the reference, gets the
full probe only. Raw samples are kept in the record.

Why several warm runs: the latency of one process is not the latency of the next. Thread
placement, memory layout and the runtime's own choices are drawn once per process, so thousands
of samples of ONE process say little about another (the built-in student's warm median moved by
-20 % to +28 % between back-to-back single-process benches at 2 threads). The run is the unit of
replication: each run's median is kept (`warm.runs`) with their spread (`warm.run_spread_pct`),
and the regression gate compares runs, not samples (regression.py).
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.artifacts import Artifact, sha256_file
from edgedistill.bench import stats
from edgedistill.bench.page_cache import evict
from edgedistill.bench.runners import Runner
from edgedistill.bench.runners.local import LocalRunner, ProbeOutcome, run_probe
from edgedistill.config import TargetConfig
from edgedistill.errors import InconclusiveError, UsageError
from edgedistill.probe.runtimes import CACHE_MECHANISMS
from edgedistill.report.results import COLD_PARTS
from edgedistill.stages import file_record

_SLOW_CLOCK_GOVERNORS = ("powersave", "conservative")


def _machine_busy_cpu_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat: all but
    idle and iowait, steal included: a neighbour VM's use of our cores counts), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and every child it waited for (the probes)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


@dataclass
class EvalSet:
    """The inputs every artifact is measured on, with labels and the teacher's answers where known.

    `inputs_path`: an .npz with one array per model input, keyed by input name, samples along
    axis 0 (or a .npy: a one-input model's only input). Without `labels` accuracy is not
    measured (a model file brought by the user, fed synthetic inputs); without
    `teacher_predictions` there is no agreement to report. `quality` (quality.Task) scores the
    outputs by the run's metric; `no_accuracy` says why top-1 means nothing here (embeddings).
    """

    inputs_path: Path
    labels: np.ndarray | None = None
    teacher_predictions: np.ndarray | None = None
    quality: object | None = None
    no_accuracy: str | None = None


def probe_request(artifact: Artifact, target: TargetConfig, inputs: Path | None, mode: str, outputs: Path | None,
                  *, threads: int | None = None, batch_size: int = 1, cache: dict | None = None,
                  same_input: bool = False, shapes: dict | None = None) -> dict:
    m = target.measurement
    return {
        "backend": artifact.backend,
        "model": str(Path(artifact.path).resolve()),
        # Every file the model reads (an IR's .bin, ONNX external data): what a remote runner copies.
        "model_files": [str(Path(f).resolve()) for f in artifact.files()],
        "precision": artifact.precision,
        "threads": threads or target.threads,
        "device": target.device,
        "inputs": str(inputs) if inputs is not None else None,
        "mode": mode,
        # Static shapes for dynamic dimensions ({input name: [int, ...]}, like benchmark_app's
        # -shape): OpenVINO reshapes to them before compiling; the others take the data's shape.
        "shapes": {name: [int(d) for d in dims] for name, dims in (shapes or {}).items()} or None,
        "outputs_path": str(outputs) if outputs else None,
        "batch_size": batch_size,
        "cache": cache,
        "same_input": same_input,  # "warm" mode: run the caching check after the loop ("full" always does)
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


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def _warm_run(warm: dict) -> dict:
    """One process's warm loop as the gate sees it: its median, size, length, caching ratio."""
    run = {"p50_ms": round(_median(warm["samples_ms"]), 5), "n": len(warm["samples_ms"]),
           "duration_s": warm["duration_s"], "hit_max_duration": warm["hit_max_duration"],
           "others_cpu_share": warm.get("others_cpu_share")}
    same, varied = warm.get("same_input_samples_ms"), warm.get("same_input_varied_ms")
    if same and varied:
        run["same_input_ratio"] = round(_median(same) / _median(varied), 4)
    return run


def warm_record(parts: list[dict]) -> dict:
    """The warm loops of one artifact's fresh processes (probe results' `warm`), as one record.

    `samples_ms` and `summary` pool every run's samples, in run order (what the p90 budget and the
    reports read); `runs` keeps each run's median and `run_spread_pct` their spread (what the
    regression gate reads); `same_input` pools the caching check, with each run's ratio."""
    runs = [_warm_run(w) for w in parts]
    samples = [x for w in parts for x in w["samples_ms"]]
    record = {
        "samples_ms": samples,
        "runs": runs,
        "run_spread_pct": stats.spread_pct([r["p50_ms"] for r in runs]),
        "duration_s": round(sum(w["duration_s"] for w in parts), 4),
        "hit_max_duration": any(w["hit_max_duration"] for w in parts),
        "loop_overhead_ms": round(_median([w["loop_overhead_ms"] for w in parts]), 6),
        "harness_overhead_ms": round(_median([w["harness_overhead_ms"] for w in parts]), 6),
    }
    same = [x for w in parts for x in w.get("same_input_samples_ms") or []]
    varied = [x for w in parts for x in w.get("same_input_varied_ms") or []]
    if same and varied:
        record["same_input"] = {"summary": stats.summarize(same), "varied_summary": stats.summarize(varied),
                                "ratio_to_varied": round(_median(same) / _median(varied), 4),
                                "run_ratios": [r["same_input_ratio"] for r in runs if "same_input_ratio" in r]}
    record["summary"] = stats.summarize(samples)
    return record


def _accuracy(outputs_path: Path, evalset: EvalSet) -> dict:
    """Top-1 against the labels, and agreement with the teacher's answers where there are any.
    The outputs file stays written either way (the probe writes every first output)."""
    if evalset.no_accuracy:
        return {"measured": False, "reason": evalset.no_accuracy}
    if evalset.labels is None:
        return {"measured": False,
                "reason": "no labels were given with the inputs, so accuracy was not measured"}
    preds = np.load(outputs_path).argmax(axis=-1)
    accuracy = {"measured": True, "n": int(preds.size), "top1": float((preds == evalset.labels).mean())}
    if evalset.teacher_predictions is not None:
        accuracy["teacher_agreement"] = float((preds == evalset.teacher_predictions).mean())
    return accuracy


def describe_model(artifact: Artifact, target: TargetConfig, shapes: dict | None = None) -> dict:
    """The model's inputs and outputs as the runtime loads it, from a probe in "describe" mode
    (a fresh process, like every measurement; nothing is run): `inputs` and `outputs` (each
    {"name", "shape": [int | None], "dtype"}), `session`, `runtime_version`, and `cold` (import,
    read, compile). With `shapes`, OpenVINO's shapes are those it was reshaped to.

    A runtime that cannot load the file is a usage error naming it; a crash or a hang is
    inconclusive (it says nothing certain about the file)."""
    req = probe_request(artifact, target, None, "describe", None, shapes=shapes)
    # The program that will measure describes too: the native ExecuTorch runner needs no torch import.
    command, _ = LocalRunner().probe_command(artifact.backend, target.executorch_runtime)
    outcome = run_probe(req, threads=req["threads"], timeout_s=target.measurement.timeout_s, command=command)
    if outcome.status == "ok":
        return outcome.result
    if outcome.status in ("timeout", "crashed"):
        raise InconclusiveError(f"{artifact.name}: {artifact.backend} {outcome.status} loading {artifact.path} "
                                f"({outcome.detail})", "run again; if it happens every time, the runtime "
                                "cannot load this model here")
    raise UsageError(f"{artifact.backend} could not load {artifact.path}: {outcome.detail}",
                     "check that the file is a model this backend reads (and, for dynamic dimensions, "
                     "the --shape given)")


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


_UNLOCKED = ("Jetson clocks not locked (power mode {nvpmodel}): DVFS moves CPU/GPU clocks under load; "
             "run `sudo jetson_clocks` on the device before measuring")


def unlocked_jetson_clocks(conditions: dict) -> bool:
    """A Jetson that said its clocks are not locked (None: not a Jetson, or it could not tell)."""
    return (conditions.get("jetson") or {}).get("clocks_locked") is False


def measurement_warnings(target: TargetConfig, conditions: dict) -> list[dict]:
    """What makes a measurement less trustworthy but the profile accepts (recorded with it)."""
    if unlocked_jetson_clocks(conditions) and target.measurement.unlocked_clocks == "warn":
        return [{"kind": "unlocked_clocks", "detail": _UNLOCKED.format(**conditions["jetson"])}]
    return []


def measurement_problems(warm: dict, full: dict, target: TargetConfig, conditions: dict) -> list[dict]:
    """Named reasons a latency measurement cannot be trusted (empty: it can)."""
    m = target.measurement
    problems = []
    n = len(warm["samples_ms"])
    # Every run must meet the minimums on its own: a short run's median is a noisier replicate.
    short = [(i, r) for i, r in enumerate(warm["runs"], 1)
             if r["n"] < m.min_iterations or r["hit_max_duration"] and r["duration_s"] < m.min_duration_s]
    if short:
        i, r = min(short, key=lambda ir: ir[1]["n"])
        problems.append({"kind": "run_too_short", "detail": (
            f"{len(short)} of {len(warm['runs'])} warm runs too short (run {i}: {r['n']} iterations in "
            f"{r['duration_s']:.1f} s); each needs {m.min_iterations} and {m.min_duration_s:g} s "
            f"({max(0, m.min_iterations - r['n'])} more iterations): raise max_duration_s")})
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
    shares = [r.get("others_cpu_share") for r in warm.get("runs") or []]
    busy_runs = [(i, x) for i, x in enumerate(shares, 1) if x is not None and x > m.max_others_cpu_share]
    if busy_runs:
        i, x = max(busy_runs, key=lambda ix: ix[1])
        problems.append({"kind": "busy_machine", "detail": (
            f"other processes used {x:.0%} of the machine's CPU during warm run {i} ({len(busy_runs)} of "
            f"{len(shares)} runs above the limit {m.max_others_cpu_share:.0%}): their work shifts latency "
            "by more than a regression the gate must catch")})
    gov = conditions.get("governor")
    if gov in _SLOW_CLOCK_GOVERNORS and not m.allow_unstable_clocks:
        problems.append({"kind": "unstable_clocks", "detail": (
            f"CPU governor {gov!r} lowers clocks under light load; set it to 'performance' "
            "or allow_unstable_clocks")})
    if unlocked_jetson_clocks(conditions) and m.unlocked_clocks == "invalid":
        problems.append({"kind": "unlocked_clocks", "detail": _UNLOCKED.format(**conditions["jetson"])
                         + ' (or set unlocked_clocks = "warn")'})
    if conditions.get("thermal_hot"):  # a remote runner that reads the device's thermal status (adb)
        problems.append({"kind": "thermal_throttling", "detail": (
            f"the device's thermal status was {conditions.get('thermal_status_max')} (limit "
            f"{conditions.get('thermal_limit')}) when a measurement started, after waiting "
            f"{conditions.get('cool_down_s') or 0:g} s for it to cool: a throttled CPU runs slower; "
            "let it cool or raise max_cool_down_s")})
    sampled = full.get("sampled_outputs")
    if sampled and (sampled["argmax_mismatches"] or sampled["max_abs_diff"] > m.sampled_output_max_abs):
        problems.append({"kind": "outputs_changed", "detail": (
            f"outputs sampled during the latency run differ from the accuracy run: "
            f"{sampled['argmax_mismatches']} of {sampled['checked']} top-1 answers changed, "
            f"max abs diff {sampled['max_abs_diff']:.3g}")})
    ratios = (warm.get("same_input") or {}).get("run_ratios") or []
    # A cache answers in every process; noise does not. So every run must show the speed-up
    # (each measured beside varied inputs in the same loop), not one unlucky run.
    if ratios and max(ratios) < m.caching_ratio:
        problems.append({"kind": "caching_suspected", "detail": (
            f"a repeated input ran at {min(ratios):.2f}x-{max(ratios):.2f}x the median of the varied inputs "
            f"timed beside it, in all {len(ratios)} run(s) (limit {m.caching_ratio:g}x): "
            "the runtime may be answering from a cache")})
    return problems


# ---------------------------------------------------------------- runs


def skipped_result(backend: str, target: TargetConfig, reason: str) -> dict:
    """The record of a backend the target asks for but that cannot run here."""
    return {"artifact": f"student-*-{backend}", "role": "student", "precision": "*", "backend": backend,
            "path": None, "size_bytes": None, "threads": target.threads, "batch_size": 1,
            "status": "skipped", "status_detail": reason, "problems": []}


def export_only_result(artifact: Artifact, target: TargetConfig, reason: str) -> dict:
    """The record of an artifact no runtime on this machine can run (an .mlpackage on Linux):
    skipped with the reason, its size and files recorded, and `export_only` so the gate neither
    passes nor fails on it (gate.check_result)."""
    return {"artifact": artifact.name, "role": artifact.role, "precision": artifact.precision,
            "backend": artifact.backend, "path": str(artifact.path), "size_bytes": artifact.size_bytes(),
            "files": [file_record(f) for f in artifact.files()], "threads": target.threads, "batch_size": 1,
            "status": "skipped", "status_detail": f"not measured: {reason}", "export_only": True,
            "problems": []}


def unreachable_result(artifact: Artifact, target: TargetConfig, reason: str) -> dict:
    """The record of an artifact whose target's device could not be reached or stayed busy:
    inconclusive, for that target alone."""
    return {"artifact": artifact.name, "role": artifact.role, "precision": artifact.precision,
            "backend": artifact.backend, "path": str(artifact.path), "size_bytes": artifact.size_bytes(),
            "threads": target.threads, "batch_size": 1, "status": "inconclusive",
            "status_detail": f"not measured: {reason}", "problems": []}


class _ArtifactProbes:
    """Runs probes for one artifact on the target's runner, evicting its files first when asked
    (--cold-disk, on this machine only)."""

    def __init__(self, artifact: Artifact, target: TargetConfig, evalset: EvalSet, cold_disk: bool,
                 shapes: dict | None = None, on_step: Callable[[str], None] = lambda s: None,
                 runner: Runner | None = None):
        self.artifact, self.target, self.evalset = artifact, target, evalset
        self.runner = runner or LocalRunner()
        self.cold_disk = cold_disk
        self.shapes = shapes
        # Which program measures: the native ExecuTorch runner, or the Python probe (which says why).
        self.command, self.runner_record = self.runner.probe_command(artifact.backend, target.executorch_runtime,
                                                                     on_step)
        self.evictions: list[str] = []  # why a run could not be disk-cold, if any
        self.others_share: float | None = None  # share of the machine other processes used in the last probe

    def probe(self, mode: str, outputs: Path | None = None, *, evict_also: list[Path] = (),
              cold: bool | None = None, **kwargs) -> ProbeOutcome:
        """One probe process; `cold` (default: every mode but "warm") says its cold start counts."""
        if self.cold_disk and (mode != "warm" if cold is None else cold):
            if self.runner.remote:  # the page cache to empty is the device's
                self.evictions.append(f"page-cache eviction runs on this machine only, not on a {self.runner.kind} device")
            elif not (eviction := evict([*self.artifact.files(), *evict_also])).ok:
                self.evictions.append(eviction.detail)
        req = probe_request(self.artifact, self.target, self.evalset.inputs_path, mode, outputs,
                            shapes=self.shapes, **kwargs)
        # What OTHER processes used while this probe ran: competing work measured during the run,
        # not guessed from a load average that lags by a minute.
        busy, own, began = _machine_busy_cpu_s(), _own_cpu_s(), time.monotonic()
        outcome = self.runner.run_probe(req, threads=req["threads"], timeout_s=self.target.measurement.timeout_s,
                                        command=self.command)
        if outcome.result is not None:
            outcome.result["runner"] = self.runner_record
        wall = time.monotonic() - began
        if busy is None or wall <= 0 or self.runner.remote:  # this machine's CPU says nothing of the device's
            self.others_share = None
        else:
            others = max(0.0, (_machine_busy_cpu_s() - busy) - (_own_cpu_s() - own))
            self.others_share = round(others / (wall * (os.cpu_count() or 1)), 4)
        return outcome

    def cold_kind(self) -> tuple[str, str]:
        if not self.cold_disk:
            return "warm-disk", "model files may be in the OS page cache (as after a recent export or run)"
        if self.evictions:
            return "warm-disk", f"--cold-disk asked, but eviction failed: {self.evictions[0]}"
        return "cold-disk", "model files evicted from the page cache before every cold run"


def _failure(outcome: ProbeOutcome) -> tuple[str, str]:
    return ("inconclusive" if outcome.status in ("timeout", "crashed", "lost") else "error"), outcome.detail


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


def _cache_record(runner: _ArtifactProbes, work_dir: Path) -> dict:
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


def _sweep_point(runner: _ArtifactProbes, threads: int, batch: int) -> dict:
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
    shapes: dict | None = None, runner: Runner | None = None,
) -> dict:
    """Every measurement of one artifact on `target` (see the module's docstring), through
    `runner` (runners.open_runner; default this machine). `shapes` ({input name: [int, ...]})
    fixes dynamic dimensions, as for describe_model."""
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
    # A device tool that measures this backend whole (adb: LiteRT's benchmark_model) fills the record.
    if runner is not None and (tool := getattr(runner, "own_tool", lambda backend: None)(artifact.backend)):
        return tool(artifact, target, evalset, work_dir, record, on_step)
    outputs = work_dir / f"{artifact.name}.outputs.npy"
    runner = _ArtifactProbes(artifact, target, evalset, cold_disk, shapes, on_step, runner)
    record["runner"] = runner.runner_record  # which program measured: native or python (and why)
    student = artifact.role == "student"

    on_step(f"{artifact.name}: cold start, warm loop, accuracy")
    conditions = runner.runner.conditions()
    outcome = runner.probe("full", outputs)
    if outcome.status != "ok":
        record["status"], record["status_detail"] = _failure(outcome)
        if (partial := _partial(outcome)) is not None:
            record["partial"] = partial
            record["status_detail"] += (f" (partial: {partial['warm_samples']} warm samples, "
                                        f"{partial['cold_runs']} cold run(s) kept)")
        return record
    full = outcome.result
    full["warm"]["others_cpu_share"] = runner.others_share
    record["conditions"] = conditions

    runs = [full["cold"]]
    warm_parts = [full["warm"]]
    # The teacher is the reference, never gated: one cold start is enough to compare against.
    # A student's other fresh processes time a warm loop after their cold start: the runs the
    # gate compares, for the price of a short loop in processes started anyway.
    for i in range(1, target.measurement.cold_runs if student else 1):
        on_step(f"{artifact.name}: cold start and warm loop {i + 1}/{target.measurement.cold_runs}")
        outcome = runner.probe("warm", cold=True, same_input=True)
        if outcome.status != "ok":
            record["status"], record["status_detail"] = _failure(outcome)
            break
        runs.append(outcome.result["cold"])
        warm_parts.append({**outcome.result["warm"], "others_cpu_share": runner.others_share})
    cache = None
    if student and target.measurement.measure_cache and artifact.backend in CACHE_MECHANISMS:
        on_step(f"{artifact.name}: cold start with the model cache, miss and hit")
        cache = _cache_record(runner, work_dir)
    kind, kind_detail = runner.cold_kind()
    record["cold"] = {"kind": kind, "kind_detail": kind_detail, **cold_record(runs), "cache": cache}

    record["warm"] = warm_record(warm_parts)
    same = record["warm"].get("same_input") or {}
    record["integrity"] = {"sampled_outputs": full.get("sampled_outputs"),
                           "caching_ratio": same.get("ratio_to_varied"),
                           "caching_run_ratios": same.get("run_ratios")}
    record["memory"] = {"peak_rss_mb": full["peak_rss_mb"], "rss_after_load_mb": full["cold"]["rss_after_load_mb"]}
    record["accuracy"] = _accuracy(outputs, evalset)
    if evalset.quality is not None:  # the run's metric on the same outputs (quality.py)
        record["quality"] = evalset.quality.measure(np.load(outputs) if outputs.is_file() else None)
    record["session"] = full["session"]
    record["runtime_version"] = full["runtime_version"]
    record["sweep"] = []
    if student:
        for threads, batch in _sweep_points(target):
            on_step(f"{artifact.name}: sweep {threads} thread(s), batch {batch}")
            record["sweep"].append(_sweep_point(runner, threads, batch))
    record["warnings"] = measurement_warnings(target, conditions)
    if record["status"] == "ok":
        record["problems"] = measurement_problems(record["warm"], full, target, conditions)
        if record["problems"]:
            record["status"] = "invalid"
            record["status_detail"] = "; ".join(p["detail"] for p in record["problems"])
    return record
