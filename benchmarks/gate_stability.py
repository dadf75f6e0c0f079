"""Is the regression gate quiet on noise and loud on a real slowdown? Really measured, nothing injected.

Measures the student ONNX Runtime artifacts of a run folder with `edgedistill bench`, back to
back, alternating 2 threads and 1 thread (--gates + 1 benches each), then gates with the
product's own `gate --baseline` logic:

  (a) self vs self: each bench against the previous one at the same thread count
      -> expect PASS every time, and no integrity problem raised in any bench
  (b) a really slower head: the 1-thread bench against the 2-thread bench measured beside it
      (the same artifacts, slower because they run on one thread)  -> expect FAIL every time
  (c) a runtime that really answers a repeated input from a cache (tests/fake_runtimes.py,
      `cache_repeats`), measured by the unchanged harness  -> expect it caught every time
      (caching_suspected, INVALID), and the honest fake beside it never

It prints each gate, the tallies, each thread count's run-to-run spread, the smallest slowdown
the gate then detects reliably on this machine (derived from the measured runs), and the time a
gated bench takes; it exits 1 if an expectation fails.

Each measurement is made on a quiet machine: the script waits until other processes are idle,
and measures again (up to --attempts times) when they used more than --busy-cpu-s CPU seconds
meanwhile. The run folder (default runs/default, made by `python3 dev.py demo`) is copied to a
temporary folder first, so its results.json is untouched; only ONNX Runtime is measured, so the
copy's export stage is redone once for that backend alone.

    .venv/bin/python benchmarks/gate_stability.py [--run-dir runs/default] [--gates 20]
    .venv/bin/python benchmarks/gate_stability.py --run-dir runs/mine -- --epochs 4
        (arguments after -- go to every `edgedistill bench`: use the ones the run was made with,
         or its distillation is redone in the copy)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgedistill, as the benches (PYTHONPATH) use it
# CPU seconds used by other processes during a measurement above which it is measured again:
# other work in between slows fresh processes, a real shift of the machine that no comparison
# of two benches can tell from a regression of the model. An idle machine here shows ~0.2 CPU s
# of other work per bench.
BUSY_CPU_S = 1.0
IDLE_CORES = 0.1  # before a measurement, wait until other processes use less than this
IDLE_WAIT_S = 120.0  # ... but at most this long (--max-wait-s); the bench after it is then checked as above

# The shipped local-cpu target's measurement (5 fresh processes per student, 0.5 s warm loop
# each), without the model-cache runs, which the gate does not read. No budgets worth the name:
# every FAIL below comes from the regression checks alone. max_load_per_core is raised because
# the 1-minute load average lags by a minute and counts this script's own previous bench; the
# script instead measures other processes' CPU use during each bench (see BUSY_CPU_S).
TARGET = """\
name = "gate-stability"
description = "student ONNX Runtime artifacts, measured for benchmarks/gate_stability.py"
runner = "local"
device = "CPU"
backends = ["{backend}"]
threads = {threads}

[measurement]
warmup_iterations = 20
min_iterations = 300
min_duration_s = 0.5
max_duration_s = 20.0
cold_runs = 5
timeout_s = 180.0
measure_cache = false
max_load_per_core = 4.0

[budgets]
p90_ms = 1000.0
cold_start_ms = 60000.0
"""
# A problem other than a busy machine is an integrity or validity flag an honest run must not raise.
CONDITION_KINDS = ("busy_machine",)


# ---------------------------------------------------------------- measuring on a quiet machine


def edgedistill(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "edgedistill", *map(str, args)], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True)


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux), or None where unreadable."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_cpu_s() -> float:
    """CPU seconds of this script and every process it waited for (bench and its probes)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def others_cpu_s(run, *args):
    """(run(*args), CPU seconds used by other processes meanwhile; None where unknown)."""
    busy, own = _busy_cpu_s(), _own_cpu_s()
    out = run(*args)
    if busy is None:
        return out, None
    return out, max(0.0, (_busy_cpu_s() - busy) - (_own_cpu_s() - own))


def wait_for_idle(max_wait_s: float = IDLE_WAIT_S) -> float:
    """Wait (up to max_wait_s) until other processes use less than IDLE_CORES over 2 s; the wait."""
    began = time.monotonic()
    while time.monotonic() - began < max_wait_s:
        _, cpu_s = others_cpu_s(time.sleep, 2.0)
        if cpu_s is None or cpu_s < 2.0 * IDLE_CORES:
            break
        time.sleep(3.0)
    return time.monotonic() - began


def bench_once(work: Path, run_name: str, target: Path, extra: list[str], attempts: int = 3) -> dict:
    """One `edgedistill bench`; retried, because a failed bench says nothing about the gate."""
    results_path = work / "runs" / run_name / "results.json"
    for attempt in range(1, attempts + 1):
        results_path.unlink(missing_ok=True)
        r = edgedistill(["bench", "--run-name", run_name, "--out-dir", "runs", "--target", target,
                         "--quiet", *extra], cwd=work)
        # Exit 0 (pass) or 1/4 (a budget or validity flag) still leave good samples behind.
        if r.returncode in (0, 1, 4) and results_path.is_file():
            return json.loads(results_path.read_text())
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        print(f"  bench failed (exit {r.returncode}, attempt {attempt}/{attempts}): {' | '.join(tail)}")
        time.sleep(10 * attempt)
    raise SystemExit("bench kept failing; see the messages above")


def bench_quiet(bench, limit_cpu_s: float, attempts: int, max_wait_s: float = IDLE_WAIT_S) -> tuple[dict, dict]:
    """bench() on a quiet machine: (results, {others_cpu_s, attempts, waited_s, bench_s})."""
    waited = 0.0
    for attempt in range(1, attempts + 1):
        waited += wait_for_idle(max_wait_s)
        started = time.perf_counter()
        results, cpu_s = others_cpu_s(bench)
        info = {"others_cpu_s": cpu_s, "attempts": attempt, "waited_s": waited,
                "bench_s": time.perf_counter() - started}
        if cpu_s is None or cpu_s <= limit_cpu_s or attempt == attempts:
            return results, info
        print(f"    other processes used {cpu_s:.1f} CPU s during this measurement: measuring again")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the gate's verdicts


def students(results: dict) -> list[dict]:
    return [r for t in results["targets"] for r in t["results"] if r["role"] == "student"]


def flags(results: dict) -> list[str]:
    """Every integrity or validity problem the bench raised on a student ("artifact: kind")."""
    return [f"{r['artifact']}: {p['kind']}" for r in students(results) for p in r.get("problems") or []
            if p["kind"] not in CONDITION_KINDS] + \
           [f"{r['artifact']}: status {r['status']}" for r in students(results)
            if r["status"] not in ("ok", "invalid")]


def gate(head: dict, base: dict, folder: Path) -> tuple[str, list[dict]]:
    """The verdict of `edgedistill gate HEAD --baseline BASE` (the same library call the CLI
    makes, in-process), and its student comparisons."""
    from edgedistill import api

    folder.mkdir(parents=True, exist_ok=True)
    h, b = folder / "head.json", folder / "base.json"
    h.write_text(json.dumps(head))
    b.write_text(json.dumps(base))
    out = api.gate(h, [], b)
    return out["verdict"], [m for m in out["regression"]["metrics"] if m["role"] == "student"]


def gate_line(label: str, verdict: str, metrics: list[dict], info: dict | None = None) -> str:
    cells = [f"{m['artifact'].removeprefix('student-').rsplit('-', 1)[0]} {m['delta_pct']:+6.1f} % "
             f"(thr {m['threshold_pct']:4.1f}, p={m['p_slower']:.3f})" for m in metrics if m["metric"] == "warm_p50"]
    others = "" if info is None else (
        "  others ?" if info["others_cpu_s"] is None else f"  others {info['others_cpu_s']:.1f} CPU s")
    return f"  {label}: {verdict:12s} " + "  ".join(cells) + others


def run_medians(results: dict) -> dict[str, list[float]]:
    return {r["artifact"]: [x["p50_ms"] for x in r["warm"]["runs"]] for r in students(results) if r.get("warm")}


def detection_floor(pairs: list[tuple[dict, dict]], floor_pct: float, alpha: float) -> float | None:
    """The smallest slowdown (in whole percent) the gate would have caught in every one of these
    really measured self-vs-self pairs: each head's measured run medians times (1 + s), against
    its measured base, through the gate's own decision (regression.compare_runs). It uses the
    real run-to-run noise of both sides and the real base spreads, so it is what this machine
    lets the gate see."""
    from edgedistill.regression import compare_runs

    cases = [(b[a], h[a]) for base, head in pairs for b, h in [(run_medians(base), run_medians(head))]
             for a in b if a in h]
    for s in range(0, 201):
        factor = 1 + s / 100
        if cases and all(compare_runs(b, [x * factor for x in h], floor_pct, alpha, bootstrap=False)["regression"]
                         for b, h in cases):
            return float(s)
    return None


# ---------------------------------------------------------------- the caching fake


def fake_bench(work: Path, options: dict, runs: int = 5, name: str = "fake") -> dict:
    """A results dict of the unchanged harness measuring the fake runtime (tests/fake_runtimes.py)
    with `options` (latency_ms, cache_repeats...), in fresh probe processes like any runtime."""
    import numpy as np

    from edgedistill.artifacts import Artifact
    from edgedistill.bench import harness
    from edgedistill.bench.runners import local
    from edgedistill.config import TargetConfig
    from edgedistill.gate import gate_results
    from edgedistill.report.results import new_results

    probe_dir = work / "fake-probe"
    if not probe_dir.is_dir():
        probe_dir.mkdir(parents=True)
        shutil.copy(local.PROBE_DIR / "probe.py", probe_dir / "probe.py")
        shutil.copy(ROOT / "tests" / "fake_runtimes.py", probe_dir / "runtimes.py")
        np.save(work / "fake-inputs.npy", np.arange(40, dtype=np.float32).reshape(10, 4))
        (work / "fake-model.bin").write_bytes(b"\0" * 1000)
    saved_dir, saved_env = local.PROBE_DIR, os.environ.get("EDGEDISTILL_FAKE_OPTIONS")
    local.PROBE_DIR = probe_dir  # the fake runtime in place of the real ones: this script only
    os.environ["EDGEDISTILL_FAKE_OPTIONS"] = json.dumps(options)
    try:
        target = TargetConfig(name=name, measurement={
            "warmup_iterations": 5, "min_iterations": 60, "min_duration_s": 0.05, "cold_runs": runs,
            "measure_cache": False, "max_load_per_core": 100.0, "max_others_cpu_share": 1.0, "timeout_s": 60},
            budgets={"p90_ms": 1000.0})  # the fake's timings are sleeps: a busy machine does not matter here
        # the fake's output row k is x[k, :3]: argmax is column 2 for every row
        evalset = harness.EvalSet(work / "fake-inputs.npy", np.full(10, 2), np.full(10, 2))
        record = harness.bench_artifact(Artifact("onnx", work / "fake-model.bin", "fp32", "student", "fake"),
                                        target, evalset, work / "fake-work")
    finally:
        local.PROBE_DIR = saved_dir
        if saved_env is None:
            os.environ.pop("EDGEDISTILL_FAKE_OPTIONS", None)
        else:
            os.environ["EDGEDISTILL_FAKE_OPTIONS"] = saved_env
    results = new_results("fake", {}, {"teacher_top1": 1.0})
    results["targets"].append({"name": name, "runner": "local", "device": "CPU", "threads": 1,
                               "budgets": target.budgets.model_dump(), "results": [record]})
    results["complete"] = True  # its one artifact is measured
    results["verdict"], checks = gate_results(results)
    results["checks"] = [c.to_json() for c in checks]
    return results


def caching_rounds(work: Path, rounds: int, latency_ms: float = 2.0) -> tuple[int, int, list[str]]:
    """(caching fake caught, honest fake flagged, lines): each round measures the honest fake and
    the caching one, and gates the caching one against the honest one."""
    caught = falsely_flagged = 0
    lines = []
    for i in range(1, rounds + 1):
        honest = fake_bench(work, {"latency_ms": latency_ms})
        caching = fake_bench(work, {"latency_ms": latency_ms, "cache_repeats": True})
        verdict, _ = gate(caching, honest, work / "gates")
        (rec,), (ok,) = students(caching), students(honest)
        kinds = [p["kind"] for p in rec["problems"]]
        hit = "caching_suspected" in kinds and rec["status"] == "invalid" and verdict == "INVALID"
        caught += hit
        falsely_flagged += bool(flags(honest))
        lines.append(f"  round {i:2d}: caching fake {verdict:7s} {','.join(kinds) or 'no problem':18s} run ratios "
                     + " ".join(f"{x:.2f}" for x in rec["integrity"]["caching_run_ratios"])
                     + f"  | honest fake {ok['status']}, ratios "
                     + " ".join(f"{x:.2f}" for x in ok["integrity"]["caching_run_ratios"]))
    return caught, falsely_flagged, lines


# ---------------------------------------------------------------- the whole check


def spread_summary(benches: list[dict]) -> str:
    spreads = sorted(r["warm"]["run_spread_pct"] for b in benches for r in students(b) if r.get("warm"))
    if not spreads:
        return "no spreads"
    return (f"run-to-run spread of the warm medians: median {statistics.median(spreads):.1f} %, "
            f"max {spreads[-1]:.1f} % over {len(spreads)} artifact benches")


def main() -> int:
    from edgedistill.regression import ALPHA, MAX_REGRESSION_PCT

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/default"),
                    help="run folder made by `edgedistill compress` (default runs/default)")
    ap.add_argument("--gates", type=int, default=20, help="gates of each kind (default 20)")
    ap.add_argument("--threads", type=int, nargs=2, default=[2, 1], metavar=("BASE", "SLOW"),
                    help="thread counts: the baseline's and the really slower head's (default 2 1)")
    ap.add_argument("--backend", default="onnxruntime", help="backend whose student artifacts are measured")
    ap.add_argument("--caching-rounds", type=int, help="rounds of the caching fake (default: --gates)")
    ap.add_argument("--keep", type=Path, help="write the measured results files here too, as they are measured")
    ap.add_argument("--from-results", type=Path, metavar="DIR",
                    help="gate the results files a --keep run wrote instead of measuring again")
    ap.add_argument("--busy-cpu-s", type=float, default=BUSY_CPU_S,
                    help=f"measure again when other processes used more CPU seconds than this meanwhile "
                         f"(default {BUSY_CPU_S}; a large value turns it off)")
    ap.add_argument("--attempts", type=int, default=3, help="measurements at most per bench (default 3)")
    ap.add_argument("--max-wait-s", type=float, default=IDLE_WAIT_S,
                    help=f"wait at most this long for an idle machine before each bench (default {IDLE_WAIT_S:g})")
    ap.add_argument("bench_args", nargs="*", help="after --: extra arguments for every `edgedistill bench`")
    args = ap.parse_args()
    if args.gates < 1:
        ap.error("--gates must be at least 1")
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file as it happens
    # SIGTERM unwinds like Ctrl-C, so the temporary folder is removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    run_dir = args.run_dir.resolve()
    if args.from_results is None and not (run_dir / "distill" / "manifest.json").is_file():
        print(f"no run folder at {args.run_dir}: run `python3 dev.py demo` first (it makes runs/default)")
        return 2
    fast_t, slow_t = args.threads
    with tempfile.TemporaryDirectory(prefix="gate-stability-") as tmp:
        work = Path(tmp)
        # The stage manifests name their files relative to the folder the run was made from,
        # so the copy under work/runs/ is found from work/ as the original was.
        if not args.from_results:
            shutil.copytree(run_dir, work / "runs" / run_dir.name,
                            ignore=shutil.ignore_patterns("bench", "results.json"))
        targets = {}
        for t in (fast_t, slow_t):
            targets[t] = work / f"gate-stability-{t}t.toml"
            targets[t].write_text(TARGET.format(backend=args.backend, threads=t))
        saved = args.keep or work / "results"
        saved.mkdir(parents=True, exist_ok=True)

        n = args.gates + 1
        print(f"measuring {run_dir}'s student {args.backend} artifacts {2 * n} times, alternating {fast_t} and "
              f"{slow_t} thread(s), each on a quiet machine (again if other processes used > {args.busy_cpu_s:g} "
              "CPU s meanwhile)")
        benches: dict[int, list[dict]] = {fast_t: [], slow_t: []}
        infos: dict[int, list[dict]] = {fast_t: [], slow_t: []}
        if args.from_results:  # as many complete rounds as were measured
            while n and not all((args.from_results / f"{t}t-{n - 1:02d}.json").is_file() for t in (fast_t, slow_t)):
                n -= 1
            if n < 2:
                print(f"fewer than 2 complete rounds of results in {args.from_results}")
                return 2
            args.gates = n - 1
            for i in range(n):
                for t in (fast_t, slow_t):
                    data = json.loads((args.from_results / f"{t}t-{i:02d}.json").read_text())
                    infos[t].append(data.pop("gate_stability"))
                    benches[t].append(data)
        else:
            # The export for this backend alone happens in the first bench: done here, off the clock.
            bench_once(work, run_dir.name, targets[fast_t], ["--backend", args.backend, *args.bench_args])
        for i in range(n if not args.from_results else 0):
            for t in (fast_t, slow_t):
                results, info = bench_quiet(
                    lambda t=t: bench_once(work, run_dir.name, targets[t], ["--backend", args.backend, *args.bench_args]),
                    args.busy_cpu_s, args.attempts, args.max_wait_s)
                benches[t].append(results)
                infos[t].append(info)
                (saved / f"{t}t-{i:02d}.json").write_text(json.dumps({**results, "gate_stability": info}))
                others = "?" if info["others_cpu_s"] is None else f"{info['others_cpu_s']:.1f}"
                print(f"  bench {i:2d} at {t} thread(s): {info['bench_s']:.1f} s (waited {info['waited_s']:.0f} s for "
                      f"an idle machine, {info['attempts']} attempt(s)), other processes {others} CPU s, "
                      f"flags: {', '.join(flags(results)) or 'none'}")

        env = benches[fast_t][0].get("environment", {})
        print(f"\n{env.get('cpu_model')}, {env.get('usable_cores')} usable cores; regression = median run slower "
              f"by > max({MAX_REGRESSION_PCT:g} %, the base's run-to-run spread) AND one-sided Mann-Whitney U "
              f"over runs p < {ALPHA:g} (the gate's defaults)")
        ok = True
        tallies = []
        pairs: dict[int, list[tuple[dict, dict]]] = {fast_t: [], slow_t: []}
        for t in (fast_t, slow_t):
            print(f"(a) self vs self at {t} thread(s), each bench against the one before (expect PASS):")
            passes = quiet = quiet_passes = 0
            for i in range(1, n):
                verdict, metrics = gate(benches[t][i], benches[t][i - 1], work / "gates")
                passes += verdict == "PASS"
                # Both benches on a quiet machine (other processes within --busy-cpu-s): what the
                # protocol asks for; the others were measured anyway after --attempts.
                calm = all((infos[t][j]["others_cpu_s"] or 0.0) <= args.busy_cpu_s for j in (i - 1, i))
                quiet += calm
                quiet_passes += calm and verdict == "PASS"
                pairs[t].append((benches[t][i - 1], benches[t][i]))
                print(gate_line(f"{t}t bench {i:2d} vs {i - 1:2d}", verdict, metrics, infos[t][i]))
            flagged = [f for b in benches[t] for f in flags(b)]
            print(f"    {spread_summary(benches[t])}; integrity/validity flags raised: {len(flagged)}"
                  + (f" ({'; '.join(flagged)})" if flagged else ""))
            tallies.append(f"self vs self at {t} thread(s): {passes} PASS of {args.gates} (expected {args.gates}); "
                           f"of them with both benches on a quiet machine: {quiet_passes} PASS of {quiet}; "
                           f"flags raised in {len(benches[t])} benches: {len(flagged)} (expected 0)")
            ok &= passes == args.gates and not flagged
        print(f"(b) {slow_t} thread(s) against the {fast_t}-thread bench beside it (expect FAIL):")
        fails = 0
        for i in range(1, n):
            verdict, metrics = gate(benches[slow_t][i], benches[fast_t][i], work / "gates")
            fails += verdict == "FAIL"
            print(gate_line(f"bench {i:2d}", verdict, metrics))
        tallies.append(f"really slower head ({slow_t} vs {fast_t} threads): {fails} FAIL of {args.gates} "
                       f"(expected {args.gates})")
        ok &= fails == args.gates

        print("(c) the fake runtime, honest and answering repeated inputs from a cache (expect caught, "
              "and the honest one never flagged):")
        rounds = args.gates if args.caching_rounds is None else args.caching_rounds
        caught, false_flags, lines = caching_rounds(work, rounds)
        print("\n".join(lines))
        tallies.append(f"caching runtime caught: {caught} of {rounds} (expected {rounds}); "
                       f"honest fake flagged: {false_flags} of {rounds} (expected 0)")
        ok &= caught == rounds and false_flags == 0

        smallest = {t: detection_floor(pairs[t], MAX_REGRESSION_PCT, ALPHA) for t in (fast_t, slow_t)}
        spreads = {t: spread_summary(benches[t]) for t in (fast_t, slow_t)}
        bench_s = [i["bench_s"] for t in infos for i in infos[t]]
        if args.keep:
            print(f"results files kept in {args.keep}")

    print()
    for line in tallies:
        print(line)
    for t in (fast_t, slow_t):
        found = "none up to 200 %" if smallest[t] is None else f"{smallest[t]:.0f} %"
        print(f"at {t} thread(s): {spreads[t]}; smallest slowdown caught in every measured self-vs-self pair "
              f"(each head's runs scaled, through the gate's own decision): {found}")
    print(f"a gated bench ({args.backend}, 2 students + the teacher, 5 fresh processes each student, "
          f"0.5 s warm loop each): median {statistics.median(bench_s):.1f} s, max {max(bench_s):.1f} s; "
          f"measured again because the machine was busy: {sum(i['attempts'] - 1 for t in infos for i in infos[t])} "
          "time(s)")
    print("OK" if ok else "NOT OK: the gate is too noisy or too blind on this machine")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
