"""Base vs head: which latencies changed, by how much, and whether the change is real.

Pure functions over two results dicts (no I/O). Results are matched by (target name, artifact
name); for each matched artifact, students and the teacher alike, two metrics are compared, each
over RUNS (fresh processes), not over the samples inside one:

  warm_p50    each run's warm median, `warm.runs[*].p50_ms` (cold_runs fresh processes per student)
  cold_start  each run's time to first result, `cold.runs[*].total_ms`

Why runs: the noise that matters is between processes. Back-to-back benches of one unchanged
student at 2 threads moved its single-process warm median by -20 % to +28 %, and a test over the
thousands of samples of one process called each shift significant at p < 1e-4, because it
assumes those samples independent while they all share one process's draw (thread placement,
memory layout, the runtime's choices). A process is one replicate; so is a cold run.

A change is a **regression** only when all three hold:

  1. the head's median run is slower than the base's by more than the threshold: the floor
     (--max-regression, 10 % warm; --max-cold-regression, 20 % cold start) or the base's own
     run-to-run spread ((max - min) / median of its runs), whichever is larger: a change smaller
     than the differences between the baseline's own runs is not evidence;
  2. it is significant: a one-sided Mann-Whitney U test over the runs (head slower), p < alpha;
     exact for small counts: 5 runs against 5 reach p = 1/252 ~ 0.004 when every head run is
     slower than every base run, 2/252 ~ 0.008 with one exception, and cannot reach 0.01 with
     fewer than 4 against 5;
  3. both sides have runs enough to reach alpha at all. When they do not (a teacher, measured
     once; a file without per-run warm medians, written before edgedistill recorded runs; a
     target with cold_runs below 5), the comparison is **untestable**: reported, never a
     regression, and a gated student's check says INCONCLUSIVE rather than PASS, so a gate that
     cannot see a regression never claims there is none.

The gate fails on warm regressions; cold-start regressions are reported but gated only when
asked (`gate_cold_start`), because fresh processes on a shared machine shift together between
sessions by more than any floor a real regression would clear (see MAX_COLD_REGRESSION_PCT).
The absolute `cold_start_ms` budget still gates cold start.

numpy and scipy are imported inside the functions that need them, so the CLI can import this
module for its defaults and stay cheap to start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgedistill.errors import UsageError

MAX_REGRESSION_PCT = 10.0
# Cold start gets its own, wider floor. Each cold run is a fresh process (interpreter, imports
# from disk, dynamic linking), and the whole set of runs shifts together from one session to the
# next: on an idle 2-core VM, 5 runs of an unchanged artifact spread by 2-5 ms within a session,
# but their median moved by up to +10 % between sessions, fully separated, which the test calls
# significant (benchmarks/gate_stability.py). The floor must cover that shift; 20 % is twice it.
MAX_COLD_REGRESSION_PCT = 20.0
ALPHA = 0.01
# A regression must exceed this many times the base's run-to-run spread (and the floor).
SPREAD_FACTOR = 1.0
BOOTSTRAP_RESAMPLES = 1000  # enough for a 95 % interval over a handful of runs
BOOTSTRAP_SEED = 0  # the same files always print the same interval
COMPARABLE_STATUSES = ("ok", "invalid")  # invalid results still carry samples; the gate flags them
LOAD_DIFFERENCE_PER_CORE = 0.5  # more than this between base and head: warn

# metric name -> (budget name of its gate check, unit)
METRICS = {
    "warm_p50": ("regression_warm_p50", "ms"),
    "cold_start": ("regression_cold_start", "ms"),
}


def warm_runs(result: dict) -> tuple[list[float], str | None]:
    """(each run's warm median, why there is no per-run data or None).

    A file without `warm.runs` (written before edgedistill recorded runs) still has its samples:
    they count as one run, their median, which no test can call significant."""
    warm = result.get("warm") or {}
    runs = [r["p50_ms"] for r in warm.get("runs") or [] if r.get("p50_ms") is not None]
    if runs:
        return runs, None
    samples = warm.get("samples_ms") or []
    if not samples:
        return [], None
    from statistics import median

    return [median(samples)], "no per-run warm medians (warm.runs): its samples count as one run"


def cold_runs(result: dict) -> tuple[list[float], str | None]:
    runs = (result.get("cold") or {}).get("runs") or []
    return [r["total_ms"] for r in runs if r.get("total_ms") is not None], None


_RUNS = {"warm_p50": warm_runs, "cold_start": cold_runs}


@dataclass(frozen=True)
class MetricComparison:
    target: str
    artifact: str
    role: str
    metric: str  # "warm_p50" | "cold_start"
    base_n: int  # runs (fresh processes) on each side
    head_n: int
    base_median: float  # median over the runs
    head_median: float
    delta_pct: float  # (head median / base median - 1) * 100
    base_spread_pct: float | None  # (max - min) / median of the base's runs; None below 2 runs
    threshold_pct: float  # max(floor, SPREAD_FACTOR x base_spread_pct): what delta_pct must exceed
    p_slower: float  # one-sided Mann-Whitney U over runs: is head slower? (decides a regression)
    p_two_sided: float  # any difference (decides "significant" in compare)
    min_p: float  # the smallest one-sided p these run counts allow (no ties)
    ratio_ci: tuple[float, float] | None  # bootstrap 95 % interval of the ratio, runs resampled
    regression: bool
    significant: bool
    untestable: str | None = None  # why these runs cannot show a regression at alpha, else None
    untrusted: str | None = None  # why a side's measurement was marked invalid, else None

    @property
    def verdict(self) -> str:
        """slower / faster / same, as a reader would say it."""
        if self.regression or (self.significant and self.delta_pct > 0):
            return "slower"
        return "faster" if self.significant and self.delta_pct < 0 else "same"

    def to_json(self) -> dict:
        return {**asdict(self), "ratio_ci": list(self.ratio_ci) if self.ratio_ci else None,
                "verdict": self.verdict}


@dataclass(frozen=True)
class NotComparable:
    target: str
    artifact: str
    role: str
    metric: str | None  # None: the whole artifact
    reason: str


@dataclass(frozen=True)
class Unmatched:
    target: str
    artifact: str
    side: str  # "new" (only in head) | "gone" (only in base)


@dataclass
class Comparison:
    max_regression_pct: float
    alpha: float
    max_cold_regression_pct: float = MAX_COLD_REGRESSION_PCT
    gate_cold_start: bool = False  # cold-start regressions FAIL the gate only when asked
    metrics: list[MetricComparison] = field(default_factory=list)
    not_comparable: list[NotComparable] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    environment_warning: str | None = None

    def floor(self, metric: str) -> float:
        """The allowed slowdown in percent for this metric."""
        return self.max_cold_regression_pct if metric == "cold_start" else self.max_regression_pct

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.regression]

    def to_json(self) -> dict:
        return {
            "max_regression_pct": self.max_regression_pct,
            "max_cold_regression_pct": self.max_cold_regression_pct,
            "gate_cold_start": self.gate_cold_start,
            "alpha": self.alpha,
            "spread_factor": SPREAD_FACTOR,
            "test": ("one-sided Mann-Whitney U over runs (fresh processes), and a threshold: "
                     "max(floor, spread_factor x the base's run-to-run spread)"),
            "environment_warning": self.environment_warning,
            "metrics": [m.to_json() for m in self.metrics],
            "not_comparable": [asdict(n) for n in self.not_comparable],
            "unmatched": [asdict(u) for u in self.unmatched],
            "regressions": len(self.regressions),
        }


# ---------------------------------------------------------------- statistics


def mann_whitney(base: list[float], head: list[float]) -> tuple[float, float]:
    """(p that head is slower, two-sided p). Rank-based: no assumption of normal latencies,
    and one slow run cannot swing it the way it swings a mean. Exact for small counts."""
    from scipy.stats import mannwhitneyu

    slower = mannwhitneyu(head, base, alternative="greater").pvalue
    both = mannwhitneyu(head, base, alternative="two-sided").pvalue
    return float(slower), float(both)


def smallest_p(n_base: int, n_head: int) -> float:
    """The one-sided exact test's smallest p: every head run slower than every base run."""
    from math import comb

    return 1.0 / comb(n_base + n_head, n_base)


def bootstrap_ratio_ci(base: list[float], head: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Percentile 95 % interval of median(head) / median(base), each side's runs resampled on
    their own; None when a side has fewer than 2 runs (nothing to resample)."""
    import numpy as np

    if min(len(base), len(head)) < 2:
        return None
    rng = np.random.default_rng(seed)
    b, h = np.asarray(base, dtype=np.float64), np.asarray(head, dtype=np.float64)
    mb = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    mh = np.median(h[rng.integers(0, h.size, (resamples, h.size))], axis=1)
    lo, hi = np.percentile(mh / mb, [2.5, 97.5])
    return float(lo), float(hi)


def compare_runs(base: list[float], head: list[float], max_regression_pct: float = MAX_REGRESSION_PCT,
                 alpha: float = ALPHA, bootstrap: bool = True, no_runs: str | None = None) -> dict:
    """The numbers behind one MetricComparison, from each side's per-run values.

    `no_runs` says why a side has no per-run data (then it is untestable whatever the counts)."""
    import numpy as np

    from edgedistill.bench.stats import spread_pct

    base_median, head_median = float(np.median(base)), float(np.median(head))
    delta_pct = (head_median / base_median - 1.0) * 100.0
    spread = spread_pct(base)
    threshold = max(max_regression_pct, SPREAD_FACTOR * spread if spread is not None else 0.0)
    p_slower, p_two_sided = mann_whitney(base, head)
    min_p = smallest_p(len(base), len(head))
    untestable = no_runs
    if untestable is None and min_p >= alpha:
        untestable = (f"{len(base)} vs {len(head)} runs cannot reach p < {alpha:g} (smallest possible "
                      f"p {min_p:.2g}): measure both with cold_runs >= 5")
    return {
        "base_n": len(base), "head_n": len(head), "base_median": base_median, "head_median": head_median,
        "delta_pct": delta_pct, "base_spread_pct": spread, "threshold_pct": threshold,
        "p_slower": p_slower, "p_two_sided": p_two_sided, "min_p": min_p,
        "ratio_ci": bootstrap_ratio_ci(base, head) if bootstrap else None,
        "regression": untestable is None and delta_pct > threshold and p_slower < alpha,
        "significant": untestable is None and p_two_sided < alpha,
        "untestable": untestable,
    }


def format_p(p: float) -> str:
    # Thousands of samples push p below any float's resolution; "0" would read as a bug.
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


# ---------------------------------------------------------------- matching results


def _by_key(results: dict) -> dict[tuple[str, str], dict]:
    return {(t["name"], r["artifact"]): r for t in results.get("targets", []) for r in t.get("results", [])}


def _status_problem(result: dict, side: str) -> str | None:
    status = result.get("status")
    if status in COMPARABLE_STATUSES:
        return None
    detail = result.get("status_detail") or ""
    return f"{side}: status {status}" + (f" ({detail})" if detail else "")


def _invalid_reason(base: dict, head: dict) -> str | None:
    reasons = [f"{side}: {r.get('status_detail') or 'invalid'}"
               for side, r in (("base", base), ("head", head)) if r.get("status") == "invalid"]
    return "; ".join(reasons) or None


def _load_per_core(results: dict) -> float | None:
    """The highest 1-minute load average per usable core recorded before any run of the file."""
    loads = [r["conditions"]["load_average_before"][0] / (r["conditions"].get("usable_cores") or 1)
             for t in results.get("targets", []) for r in t.get("results", [])
             if (r.get("conditions") or {}).get("load_average_before")]
    return max(loads) if loads else None


def environment_warning(base: dict, head: dict) -> str | None:
    """One line naming what differs between the machines or thread settings, else None."""
    diffs = []
    cpu_b = (base.get("environment") or {}).get("cpu_model")
    cpu_h = (head.get("environment") or {}).get("cpu_model")
    if cpu_b != cpu_h:
        diffs.append(f"cpu_model {cpu_b!r} vs {cpu_h!r}")
    threads_b = {t["name"]: t.get("threads") for t in base.get("targets", [])}
    for t in head.get("targets", []):
        if t["name"] in threads_b and threads_b[t["name"]] != t.get("threads"):
            diffs.append(f"{t['name']} threads {threads_b[t['name']]} vs {t.get('threads')}")
    # Other work on the machine slows fresh processes (cold start) far more than the warm loop,
    # and the test cannot tell that from a regression: only the recorded load can.
    load_b, load_h = _load_per_core(base), _load_per_core(head)
    if load_b is not None and load_h is not None and abs(load_h - load_b) > LOAD_DIFFERENCE_PER_CORE:
        diffs.append(f"load average per core before the runs up to {load_b:.2f} vs {load_h:.2f}")
    if not diffs:
        return None
    return "base and head were measured differently (" + "; ".join(diffs) + "): deltas may not be the code's"


def compare_results(base: dict, head: dict, max_regression_pct: float = MAX_REGRESSION_PCT,
                    alpha: float = ALPHA, bootstrap: bool = True,
                    max_cold_regression_pct: float = MAX_COLD_REGRESSION_PCT,
                    gate_cold_start: bool = False) -> Comparison:
    """Every matched artifact's warm and cold samples, base vs head. The warm floor is
    max_regression_pct, the cold-start floor max_cold_regression_pct.

    Raises UsageError when the two files have no artifact in common (nothing to compare)."""
    if min(max_regression_pct, max_cold_regression_pct) < 0:
        raise UsageError(f"max regression must be >= 0 %, got {min(max_regression_pct, max_cold_regression_pct):g}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be between 0 and 1, got {alpha:g}")
    from statistics import median

    base_r, head_r = _by_key(base), _by_key(head)
    common = [k for k in head_r if k in base_r]
    if not common:
        raise UsageError("base and head have no (target, artifact) in common: nothing to compare",
                         "compare results of the same targets and artifacts")
    out = Comparison(max_regression_pct, alpha, max_cold_regression_pct, gate_cold_start,
                     environment_warning=environment_warning(base, head))
    out.unmatched += [Unmatched(t, a, "new") for (t, a) in head_r if (t, a) not in base_r]
    out.unmatched += [Unmatched(t, a, "gone") for (t, a) in base_r if (t, a) not in head_r]
    for target, artifact in common:
        b, h = base_r[(target, artifact)], head_r[(target, artifact)]
        role = h.get("role", "")
        problem = _status_problem(b, "base") or _status_problem(h, "head")
        if problem:
            out.not_comparable.append(NotComparable(target, artifact, role, None, problem))
            continue
        for metric, runs in _RUNS.items():
            (bs, b_why), (hs, h_why) = runs(b), runs(h)
            missing = [side for side, s in (("base", bs), ("head", hs)) if not s]
            if missing:
                out.not_comparable.append(
                    NotComparable(target, artifact, role, metric, f"no samples in {' and '.join(missing)}"))
            elif median(bs) <= 0:
                out.not_comparable.append(
                    NotComparable(target, artifact, role, metric, "base median is not positive"))
            else:
                why = "; ".join(f"{side}: {w}" for side, w in (("base", b_why), ("head", h_why)) if w) or None
                numbers = compare_runs(bs, hs, out.floor(metric), alpha, bootstrap, no_runs=why)
                out.metrics.append(MetricComparison(target, artifact, role, metric, **numbers,
                                                    untrusted=_invalid_reason(b, h)))
    return out


# ---------------------------------------------------------------- gate checks


def format_spread(spread: float | None) -> str:
    return "—" if spread is None else f"{spread:.1f} %"


def threshold_words(m: MetricComparison, floor: float) -> str:
    """Which of the floor and the base's spread set the threshold, for a reader."""
    if m.base_spread_pct is not None and m.threshold_pct > floor:
        return f"threshold {m.threshold_pct:.1f} % (the base's run-to-run spread; floor {floor:g} %)"
    return f"threshold {m.threshold_pct:.1f} % (the floor; base run spread {format_spread(m.base_spread_pct)})"


def gate_checks(comparison: Comparison) -> list:
    """One Check per compared student metric: FAIL only for a regression (over the threshold AND
    significant over runs); INVALID when either side's result was marked invalid (too few samples,
    a busy machine, the wrong device); INCONCLUSIVE when the runs cannot show a regression at
    alpha (too few, or no per-run data). The teacher is compared as the reference but never gated,
    and cold start only when the comparison asks for it. The check's limit is the threshold used."""
    from edgedistill.gate import FAIL, INCONCLUSIVE, INVALID, PASS, Check

    checks = []
    for m in comparison.metrics:
        if m.role != "student" or (m.metric == "cold_start" and not comparison.gate_cold_start):
            continue
        unit = METRICS[m.metric][1]
        detail = (f"{m.delta_pct:+.1f} %, {threshold_words(m, comparison.floor(m.metric))}, "
                  f"p={format_p(m.p_slower)} (one-sided Mann-Whitney U over runs, n={m.base_n}/{m.head_n}), "
                  f"median run {m.base_median:.4g} -> {m.head_median:.4g} {unit}")
        outcome = FAIL if m.regression else PASS
        if m.untestable:
            outcome, detail = INCONCLUSIVE, f"cannot test: {m.untestable}; {detail}"
        if m.untrusted:  # as for the latency budgets: an untrusted measurement neither passes nor fails
            outcome, detail = INVALID, f"measurement marked invalid ({m.untrusted}); {detail}"
        checks.append(Check(m.target, m.artifact, METRICS[m.metric][0], round(m.threshold_pct, 4),
                            round(m.delta_pct, 4), outcome, detail))
    return checks


def notes(comparison: dict) -> list[str]:
    """Plain lines for what a table does not show: environment, new/gone, not comparable.

    Takes Comparison.to_json(), which is also what `gate` returns under "regression"."""
    warning = comparison.get("environment_warning")
    lines = [f"warning: {warning}"] if warning else []
    lines += [f"{u['side']}: {u['target']} / {u['artifact']} (only in {'head' if u['side'] == 'new' else 'base'})"
              for u in comparison.get("unmatched", [])]
    lines += [f"not comparable: {n['target']} / {n['artifact']}{' ' + n['metric'] if n['metric'] else ''}: "
              f"{n['reason']}" for n in comparison.get("not_comparable", [])]
    if not comparison.get("gate_cold_start"):
        lines += [f"cold start {m['delta_pct']:+.1f} % (p={format_p(m['p_slower'])}) for {m['target']} / "
                  f"{m['artifact']}: a regression, reported but not gated (--gate-cold-start gates it)"
                  for m in comparison.get("metrics", []) if m["metric"] == "cold_start" and m["regression"]]
    lines += [f"untestable: {m['target']} / {m['artifact']} {m['metric']}: {m['untestable']}"
              for m in comparison.get("metrics", []) if m.get("untestable") and m["role"] == "student"]
    untrusted = {(m["target"], m["artifact"]): m["untrusted"] for m in comparison.get("metrics", []) if m["untrusted"]}
    lines += [f"measured under invalid conditions: {t} / {a}: {why}" for (t, a), why in untrusted.items()]
    return lines
