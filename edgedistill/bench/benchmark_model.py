"""LiteRT's own `benchmark_model` on a phone: its command line, its log parsed, a results record.

A phone measures a `.tflite` with the tool Google publishes for it (TensorFlow Lite / LiteRT's
`benchmark_model`, prebuilt for Android arm64; the user gives its path as `[adb] benchmark_model`),
not with a probe of ours: its numbers are the ones LiteRT's own docs and bug reports use. The
adb runner pushes it, pins it to the big cores, cools the phone down and runs it once per cold
run (a fresh process each); this module builds the flags, reads what it prints and turns that
into the result schema. What it prints (tflite/tools/benchmark/benchmark_model.cc,
benchmark_tflite_model.cc, tools/logging.h: INFO/WARN lines on stdout, ERROR/FATAL on stderr):

    INFO: Initialized session in 3.412ms.
    INFO: Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
    INFO: count=5 first=1731 curr=598 min=590 max=1731 avg=823.4 std=452 p5=590 median=601 p95=1731
    INFO: Running benchmark for at least 50 iterations and at least 0.05 seconds but terminate if exceeding 150 seconds.
    INFO: count=84 first=612 curr=597 min=585 max=702 avg=598.7 std=14 p5=588 median=596 p95=622
    INFO: Inference timings in us: Init: 3412, First inference: 1731, Warmup (avg): 823.4, Inference (avg): 598.7
    INFO: Memory footprint delta from the start of the tool (MB): init=2.51562 overall=3.10938
    INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.33594

(times in microseconds; the two `count=` lines are the warm-up and the timed runs; percentiles
come from `StatWithPercentiles`, so p5 / median / p95 only: the schema's p90 and p99 stay null
with the reason, never estimated from avg and std). The Python `litert-benchmark` the
ai-edge-litert wheel ships (ai_edge_litert/tools/benchmark_litert_model.py) prints a different
block ("Model initialization:  6.87 ms", "Inference (median):    0.45 ms", ...): parsed too, so
the same code reads both and says which it read (`format`).
"""

from __future__ import annotations

import re
import shlex

from edgedistill.bench import stats

TOOL = "benchmark_model"
ANDROID_FORMAT = "tflite_benchmark_model"  # the C++ tool (Android, desktop builds)
WHEEL_FORMAT = "litert_benchmark_py"  # the wheel's Python litert-benchmark
NOT_PRINTED = "benchmark_model prints p5, median and p95 only (StatWithPercentiles), and no samples"


class ToolOutputError(Exception):
    """What the tool printed holds no measurement (it failed, or this is not its output)."""


def command(binary: str, model: str, *, threads: int, warmup_runs: int, num_runs: int, min_secs: float,
            max_secs: float) -> list[str]:
    """The tool's argv with its own flag names (benchmark_model.cc's GetFlags, benchmark_tflite_model.cc).

    The measurement profile maps onto them: warm-up runs exactly `warmup_runs` (its default
    `warmup_min_secs` of 0.5 s would add more), at least `num_runs` timed runs and `min_secs`,
    stopped at `max_secs`; op profiling off explicitly (a build with TFLITE_PROFILING_ENABLED turns
    it on by default, and it slows every op); the peak memory monitor on (a thread polling the
    footprint every 50 ms: the tool's README says it may slightly affect the timings)."""
    return [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup_runs}",
            "--warmup_min_secs=0", f"--num_runs={num_runs}", f"--min_secs={min_secs:g}",
            f"--max_secs={max_secs:g}", "--enable_op_profiling=false", "--report_peak_memory_footprint=true"]


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- parsing

_NUM = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|-?inf)"
_STAT = re.compile(r"^(?:INFO: )?count=(\d+)\b(.*)$", re.MULTILINE)
_FIELD = re.compile(rf"\b(first|curr|min|max|avg|std|p5|median|p95)={_NUM}")
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                      rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_SESSION = re.compile(rf"Initialized session in {_NUM} ?ms")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_MEMORY = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init={_NUM} overall={_NUM}")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_SIZE = re.compile(rf"The input model file size \(MB\): {_NUM}")
# A failing tool's own lines, most telling first: the C++ tool's ERROR/FATAL lines (tools/logging.h,
# the op resolver's error reporter), a Python tool's logged errors and exception, then any other
# "Failed to" line that is not a warning (the wheel warns "Failed to load plugin" on every run).
_ERROR_KINDS = (re.compile(r"^(?:ERROR|FATAL)\b"), re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) "),
                re.compile(r"^[A-Za-z_.]*(?:Error|Exception): "), re.compile(r"^(?!WARN|INFO|W\d|I\d).*\bFailed to "))
# The wheel's tool: "Label:   1.23 ms" lines of its results block.
_WHEEL = re.compile(rf"^(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \(avg\)|Inference \(min\)|"
                    rf"Inference \(max\)|Inference \(median\)|Inference \(std\)|Inference \(p5\)|Inference \(p95\)):"
                    rf"\s+{_NUM} ms(?: \((\d+) runs\))?\s*$", re.MULTILINE)
_WHEEL_KEYS = {"Model initialization": "init", "Warmup (first)": "warmup_first", "Warmup (avg)": "warmup_avg",
               "Inference (avg)": "avg", "Inference (min)": "min", "Inference (max)": "max",
               "Inference (median)": "median", "Inference (std)": "std", "Inference (p5)": "p5",
               "Inference (p95)": "p95"}
_US_FIELDS = ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")


def _f(text: str) -> float | None:
    value = float(text)
    return value if value == value else None  # "nan" (an empty percentile) is not a number to keep


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 6)


def _stat_line(rest: str, count: int) -> dict:
    """One `count=...` line: every field in ms. `count=N curr=X(all same)` has one value for all."""
    fields = {k: _f(v) for k, v in _FIELD.findall(rest)}
    if "(all same)" in rest or (count == 1 and "min" not in fields):
        same = fields.get("curr")
        fields = {**{k: same for k in ("first", "curr", "min", "max", "avg", "median")}, "std": 0.0, **fields}
    return {"count": count, **{f"{k}_ms": _ms(fields.get(k)) for k in _US_FIELDS}}


def errors(text: str) -> list[str]:
    """The tool's own error lines, most telling first (the closing "Benchmarking failed." last)."""
    found: list[tuple[int, str]] = []
    for line in text.splitlines():
        line = line.strip()
        kind = next((i for i, k in enumerate(_ERROR_KINDS) if k.search(line)), None)
        if kind is not None:
            found.append((len(_ERROR_KINDS) if line.endswith("Benchmarking failed.") else kind, line))
    return list(dict.fromkeys(line for _, line in sorted(found, key=lambda kl: kl[0])))


def parse(text: str) -> dict:
    """What one run of the tool printed (stdout and stderr together), in milliseconds and MB.

    Raises ToolOutputError when it holds no timed runs: the tool failed (its error line is the
    message) or this is not benchmark_model's output."""
    if _WHEEL.search(text):
        return _parse_wheel(text)
    stats_lines = [(int(m.group(1)), m.group(2)) for m in _STAT.finditer(text)]
    timings = _TIMINGS.search(text)
    if len(stats_lines) < 2 and timings is None:
        raise ToolOutputError(errors(text)[0] if errors(text) else
                              "no timings in its output (no \"count=\" lines, no \"Inference timings in us\")")
    runs = [_stat_line(rest, count) for count, rest in stats_lines]
    warmup, inference = (runs[0], runs[1]) if len(runs) >= 2 else (None, runs[0] if runs else None)
    session = _SESSION.search(text)
    memory, peak, size = _MEMORY.search(text), _PEAK.search(text), _SIZE.search(text)
    init_ms = _ms(_f(timings.group(1))) if timings else (_f(session.group(1)) if session else None)
    return {
        "format": ANDROID_FORMAT,
        "init_ms": init_ms,
        "first_inference_ms": _ms(_f(timings.group(2))) if timings else (warmup or {}).get("first_ms"),
        "warmup": warmup,
        "inference": inference,
        "inference_avg_ms": _ms(_f(timings.group(4))) if timings else (inference or {}).get("avg_ms"),
        "requested_runs": [int(n) for n in _RUNNING.findall(text)],
        "memory": {"init_delta_mb": _f(memory.group(1)) if memory else None,
                   "overall_delta_mb": _f(memory.group(2)) if memory else None,
                   "peak_mb": _f(peak.group(1)) if peak else None},
        "model_size_mb": _f(size.group(1)) if size else None,
        "errors": errors(text),
        "evidence": _evidence(text, (_STAT, _TIMINGS, _SESSION, _MEMORY, _PEAK)),
    }


def _evidence(text: str, patterns) -> list[str]:
    """The lines the numbers were read from, as the tool printed them (kept in the results)."""
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in patterns)]


def _parse_wheel(text: str) -> dict:
    values: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for label, number, runs in _WHEEL.findall(text):
        values[_WHEEL_KEYS[label]] = _f(number)
        if runs:
            counts[_WHEEL_KEYS[label]] = int(runs)
    if values.get("median") is None or "avg" not in counts:
        raise ToolOutputError("its results block has no median or no run count")
    inference = {"count": counts["avg"], "first_ms": None, "curr_ms": None,
                 **{f"{k}_ms": values.get(k) for k in ("min", "max", "avg", "std", "p5", "median", "p95")}}
    warmup = {"count": counts.get("warmup_avg"), "first_ms": values.get("warmup_first"),
              "avg_ms": values.get("warmup_avg")}
    return {"format": WHEEL_FORMAT, "init_ms": values.get("init"), "first_inference_ms": values.get("warmup_first"),
            "warmup": warmup, "inference": inference, "inference_avg_ms": values.get("avg"), "requested_runs": [],
            "memory": {"init_delta_mb": None, "overall_delta_mb": None, "peak_mb": None},
            "model_size_mb": None, "errors": errors(text), "evidence": _evidence(text, (_WHEEL,))}


# ---------------------------------------------------------------- into the result schema

COLD_NOTE = ("benchmark_model times its Init (reading the model, building the interpreter, applying delegates, "
             "allocating tensors) as one part: init_ms; read_ms and compile_ms are not split out, and "
             "interpreter_ms (process start) and import_ms are not measured by it")
P90_REASON = f"not printed: {NOT_PRINTED}; never estimated from avg and std"


def cold_record(runs: list[dict]) -> dict:
    """Every run's init and first inference (total = their sum), with median/min/max of each."""
    rows = []
    for r in runs:
        init, first = r.get("init_ms"), r.get("first_inference_ms")
        rows.append({"interpreter_ms": None, "import_ms": None, "read_ms": None, "compile_ms": None,
                     "init_ms": init, "first_inference_ms": first,
                     "total_ms": round(init + first, 6) if init is not None and first is not None else None})
    record: dict = {"runs": rows, "parts_note": COLD_NOTE}
    for part in ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "init_ms", "first_inference_ms", "total_ms"):
        record[part] = stats.median_and_spread([r.get(part) for r in rows])
    return record


def warm_record(runs: list[dict]) -> dict:
    """The timed runs of every fresh process as one record. Without samples nothing is pooled:
    each process's own median, mean, std, min, max, p5 and p95 are kept in `runs`; the summary's
    p50 is the median of those medians (one run: its median), min/max the extremes, mean the
    count-weighted mean, p5/p95 the median of the runs'; p90 and p99 are null (P90_REASON)."""
    inf = [r["inference"] for r in runs]
    per_run = [{"p50_ms": i.get("median_ms"), "n": i["count"], "mean_ms": i.get("avg_ms"), "std_ms": i.get("std_ms"),
                "min_ms": i.get("min_ms"), "max_ms": i.get("max_ms"), "p5_ms": i.get("p5_ms"),
                "p95_ms": i.get("p95_ms")} for i in inf]
    n = sum(r["n"] for r in per_run)

    def mid(key: str) -> float | None:
        got = stats.median_and_spread([r[key] for r in per_run])
        return got.get("median")

    means = [(r["mean_ms"], r["n"]) for r in per_run if r["mean_ms"] is not None]
    mean = sum(m * k for m, k in means) / sum(k for _, k in means) if means else None
    summary = {"n": n, "p50_ms": mid("p50_ms"), "p90_ms": None, "p99_ms": None,
               "mean_ms": None if mean is None else round(mean, 6),
               "std_ms": mid("std_ms"), "p5_ms": mid("p5_ms"), "p95_ms": mid("p95_ms"),
               "min_ms": min((r["min_ms"] for r in per_run if r["min_ms"] is not None), default=None),
               "max_ms": max((r["max_ms"] for r in per_run if r["max_ms"] is not None), default=None),
               "throughput_per_s": round(1000.0 / mean, 3) if mean else None,
               "p90_reason": P90_REASON, "p99_reason": P90_REASON,
               # Each run's p95 is at least its p90, and the pooled p90 is at most the largest run's
               # p90: the largest p95 bounds p90 from above (the gate may pass a p90 ceiling on it).
               "p90_upper_bound_ms": max((r["p95_ms"] for r in per_run if r["p95_ms"] is not None), default=None),
               "p90_upper_bound_basis": "the largest run's p95 (p90 <= p95 in every run)",
               "p50_basis": "the run's median" if len(per_run) == 1 else
               f"the median of {len(per_run)} fresh processes' medians (benchmark_model prints no samples)"}
    return {"samples_ms": [], "samples_note": f"none: {NOT_PRINTED}", "runs": per_run,
            "run_spread_pct": stats.spread_pct([r["p50_ms"] for r in per_run]), "summary": summary,
            "warmup": [r["warmup"] for r in runs]}


def memory_record(runs: list[dict]) -> dict:
    """The largest peak any run reported (`--report_peak_memory_footprint`: the process's
    footprint polled every 50 ms, the tool's own memory included, as the probe's peak RSS
    includes its interpreter), and each run's deltas since the tool started."""
    peaks = [r["memory"]["peak_mb"] for r in runs if r["memory"]["peak_mb"] is not None]
    return {"peak_rss_mb": max(peaks) if peaks else None,
            "peak_source": "benchmark_model: Overall peak memory footprint (MB) via periodic monitoring"
            if peaks else "not reported by this benchmark_model (no peak memory line)",
            "rss_after_load_mb": None,
            "init_delta_mb": [r["memory"]["init_delta_mb"] for r in runs],
            "overall_delta_mb": [r["memory"]["overall_delta_mb"] for r in runs]}


# ---------------------------------------------------------------- one artifact on the phone

NO_OUTPUTS = ("benchmark_model feeds its own random inputs and returns no outputs: accuracy on the phone is "
              "not measured (the export's check against PyTorch on this machine verifies the .tflite)")


def _failure(run: dict, serial: str) -> tuple[str, str] | None:
    """(status, detail) when a run of the tool did not measure: lost / timed out / killed are
    inconclusive; a non-zero exit or an ERROR line is an error naming the tool's own line."""
    if run["status"] == "lost":
        return "inconclusive", run["detail"]
    if run["status"] == "timeout":
        return "inconclusive", f"{TOOL} did not finish within the timeout on {serial}; its process group was killed"
    code = run["returncode"]
    text = run["stdout"] + run["stderr"]
    found = errors(text)
    if code is not None and code < 0:
        return "inconclusive", f"{TOOL} on {serial} was killed by signal {-code}: {found[0] if found else run['detail']}"
    fatal = [line for line in found if re.match(r"(?:ERROR|FATAL)\b", line)]
    if code != 0 or fatal:
        # 126/127: the shell could not run it (not executable there, wrong architecture, missing loader).
        said = (found or [run["detail"] or _last(run["stderr"]) or "no output"])[0]
        return "error", f"{TOOL} failed on {serial} (exit {code}): {said}"
    return None


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def problems(record: dict, target, conditions: dict) -> list[dict]:
    """Why a benchmark_model measurement cannot be trusted: the harness's checks that apply
    without samples (each run long enough, the phone idle and cool)."""
    m = target.measurement
    found = []
    short = [(i, r) for i, r in enumerate(record["warm"]["runs"], 1) if r["n"] < m.min_iterations]
    if short:
        i, r = short[0]
        found.append({"kind": "run_too_short", "detail": (
            f"{len(short)} of {len(record['warm']['runs'])} {TOOL} runs too short (run {i}: {r['n']} timed runs); "
            f"each needs {m.min_iterations}: raise max_duration_s (--max_secs)")})
    load, cores = conditions.get("load_average_before"), conditions.get("usable_cores") or 1
    if load and load[0] / cores > m.max_load_per_core:
        found.append({"kind": "busy_machine", "detail": (
            f"1-minute load average {load[0]:.2f} on {cores} usable cores before the run "
            f"(limit {m.max_load_per_core:g} per core): other work was competing for the CPU")})
    if conditions.get("thermal_hot"):
        found.append({"kind": "thermal_throttling", "detail": (
            f"the device's thermal status was {conditions.get('thermal_status_max')} (limit "
            f"{conditions.get('thermal_limit')}) when a measurement started, after waiting "
            f"{conditions.get('cool_down_s') or 0:g} s for it to cool: a throttled CPU runs slower; "
            "let it cool or raise max_cool_down_s")})
    return found


def _run(runner, artifact, target, threads: int) -> dict:
    m = target.measurement
    return runner.run_tool(artifact, lambda model: command(
        runner.tool, model, threads=threads, warmup_runs=m.warmup_iterations, num_runs=m.min_iterations,
        min_secs=m.min_duration_s, max_secs=m.max_duration_s), threads=threads, timeout_s=m.timeout_s)


def _parsed(run: dict, serial: str) -> tuple[dict | None, tuple[str, str] | None]:
    if (failed := _failure(run, serial)) is not None:
        return None, failed
    try:
        parsed = parse(run["stdout"] + "\n" + run["stderr"])
    except ToolOutputError as e:
        return None, ("error", f"{TOOL} on {serial} printed no measurement: {e}")
    if parsed["inference"] is not None and parsed["inference"]["count"] == 0:
        return None, ("error", f"{TOOL} on {serial} timed no runs (count=0)")
    if parsed["inference"] is None or parsed["inference"].get("median_ms") is None:
        return None, ("error", f"{TOOL} on {serial} printed no median of its timed runs (a build without "
                               "percentiles): p50 cannot be measured")
    return parsed, None


def measure(runner, artifact, target, evalset, work_dir, record: dict, on_step=lambda s: None) -> dict:
    """Every measurement of one `.tflite` on the phone, by benchmark_model: `cold_runs` fresh
    processes for a student (one for the teacher), each its own init, first inference and timed
    runs; then one run per sweep point (threads; batch sizes other than 1 are not supported).
    `record` is the harness's start of the artifact's record; returned filled."""
    from edgedistill.artifacts import atomic_write_bytes

    serial = runner.transport.serial
    record["runner"] = dict(runner.tool_record)
    student = artifact.role == "student"
    n = target.measurement.cold_runs if student else 1
    conditions = runner.conditions()
    record["conditions"] = conditions
    parsed_runs, argv, mask = [], None, None
    for i in range(n):
        on_step(f"{artifact.name}: {TOOL} on {serial}, fresh process {i + 1}/{n}")
        run = _run(runner, artifact, target, target.threads)
        argv, mask = run["argv"] or argv, run["mask"] or mask
        if run["stdout"] or run["stderr"]:  # all it printed, in the bench folder (results keep the evidence)
            atomic_write_bytes(work_dir / f"{artifact.name}.{TOOL}.{i + 1}.log", (run["stdout"] + run["stderr"]).encode())
        parsed, failed = _parsed(run, serial)
        if failed is not None:
            record["status"], record["status_detail"] = failed
            break
        parsed_runs.append(parsed)
    record["tool"] = {"name": TOOL, "binary": record["runner"].get("binary"),
                      "command": (f"taskset {mask} " if mask else "") + command_line(argv) if argv else None,
                      "format": parsed_runs[0]["format"] if parsed_runs else None,
                      "inputs": "random (the tool's own; --input_layer_value_files not used)",
                      "runs": parsed_runs}
    if not parsed_runs:
        return record
    record["cold"] = {"kind": "warm-disk", "kind_detail": "the model was pushed to the phone just before: "
                      "its page cache may hold it (eviction runs on this machine only)",
                      **cold_record(parsed_runs), "cache": None}
    record["warm"] = warm_record(parsed_runs)
    record["memory"] = memory_record(parsed_runs)
    record["integrity"] = {"sampled_outputs": None, "caching_ratio": None, "caching_run_ratios": None,
                           "note": f"not checked: {NO_OUTPUTS}"}
    record["accuracy"] = {"measured": False, "reason": NO_OUTPUTS}
    if evalset is not None and evalset.quality is not None:
        record["quality"] = {"metric": evalset.quality.metric, "measured": False, "reason": NO_OUTPUTS,
                             "value": None, "teacher": None, "drop": None, "metrics": {}}
    record["session"] = {"backend": artifact.backend, "device": target.device, "threads": target.threads,
                         "tool": TOOL, "format": parsed_runs[0]["format"]}
    record["runtime_version"] = None  # benchmark_model does not print the LiteRT version it was built from
    record["sweep"] = []
    if student and record["status"] == "ok":
        for threads in target.sweep.threads or []:
            for batch in target.sweep.batch_sizes or [1]:
                if (threads, batch) == (target.threads, 1):
                    continue
                record["sweep"].append(_sweep_point(runner, artifact, target, threads, batch, serial))
    record["warnings"] = []
    if record["status"] == "ok":
        record["problems"] = problems(record, target, conditions)
        if record["problems"]:
            record["status"] = "invalid"
            record["status_detail"] = "; ".join(p["detail"] for p in record["problems"])
    return record


def _sweep_point(runner, artifact, target, threads: int, batch: int, serial: str) -> dict:
    point = {"threads": threads, "batch_size": batch, "status": "ok", "detail": "", "summary": None,
             "samples_per_s": None}
    if batch != 1:
        return {**point, "status": "unsupported",
                "detail": f"{TOOL} runs the model's own batch size (its input shapes); batch {batch} not measured"}
    parsed, failed = _parsed(_run(runner, artifact, target, threads), serial)
    if failed is not None:
        return {**point, "status": "error", "detail": failed[1]}
    summary = warm_record([parsed])["summary"]
    return {**point, "summary": summary, "samples_per_s": summary["throughput_per_s"]}
