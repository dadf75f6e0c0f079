"""Budgets + results -> checks -> one verdict and its exit code.

Each budget is a small check object giving a typed outcome. Student artifacts are gated; the
teacher is measured as the reference and never gated. Precedence of the verdict: FAIL (a budget
was missed: block the release) over INVALID (measurement not trustworthy) over INCONCLUSIVE (no
measurement: timeout, crash, unavailable runtime) over PASS. An incomplete results file (an
interrupted or crashed bench: see report/results.py) is INCONCLUSIVE whatever its checks say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from edgedistill.config import BudgetTable, validate
from edgedistill.errors import (
    EXIT_BUDGET_FAILED,
    EXIT_INCONCLUSIVE,
    EXIT_INVALID,
    EXIT_PASS,
)
from edgedistill.report.results import dig, incomplete_reason

PASS, FAIL, INVALID, INCONCLUSIVE = "PASS", "FAIL", "INVALID", "INCONCLUSIVE"
EXIT_CODES = {PASS: EXIT_PASS, FAIL: EXIT_BUDGET_FAILED, INVALID: EXIT_INVALID, INCONCLUSIVE: EXIT_INCONCLUSIVE}
_PRECEDENCE = (FAIL, INVALID, INCONCLUSIVE, PASS)


@dataclass(frozen=True)
class Check:
    """`metric <= limit` for one artifact on one target (`>=` for the floors in AT_LEAST)."""

    target: str
    artifact: str
    budget: str
    limit: float
    value: float | None
    outcome: str
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _p90(r: dict, ref: dict) -> float | None:
    return dig(r, "warm", "summary", "p90_ms")


def _p90_bound(r: dict) -> float | None:
    """An upper bound of p90 recorded where p90 itself could not be (warm.summary.p90_upper_bound_ms)."""
    bound = dig(r, "warm", "summary", "p90_upper_bound_ms")
    return bound if isinstance(bound, (int, float)) and bound == bound else None


def _cold(r: dict, ref: dict) -> float | None:
    return dig(r, "cold", "total_ms", "median")


def _accuracy_drop(r: dict, ref: dict) -> float | None:
    top1 = dig(r, "accuracy", "top1")
    teacher = ref.get("teacher_top1")
    return None if top1 is None or teacher is None else round((teacher - top1) * 100.0, 4)


def _quality_drop(r: dict, ref: dict) -> float | None:
    """The teacher's value minus the artifact's, in the run's metric's units (quality.py)."""
    return dig(r, "quality", "drop") if dig(r, "quality", "measured") else None


def _quality(r: dict, ref: dict) -> float | None:
    return dig(r, "quality", "value") if dig(r, "quality", "measured") else None


def _size(r: dict, ref: dict) -> float | None:
    return None if r["size_bytes"] is None else r["size_bytes"] / 2**20


def _memory(r: dict, ref: dict) -> float | None:
    return dig(r, "memory", "peak_rss_mb")


METRICS: dict[str, Callable[[dict, dict], float | None]] = {
    "p90_ms": _p90,
    "cold_start_ms": _cold,
    "accuracy_drop_pt": _accuracy_drop,
    "quality_drop": _quality_drop,
    "min_quality": _quality,
    "size_mb": _size,
    "memory_mb": _memory,
}


def _not_measured(budget: str, result: dict, reference: dict) -> str:
    if budget == "p90_ms" and dig(result, "warm", "summary", "p90_reason"):  # a tool that prints no p90
        return f"not measured: p90 {dig(result, 'warm', 'summary', 'p90_reason')}"
    if budget == "accuracy_drop_pt":
        if dig(result, "accuracy", "measured") is False:
            return f"not measured: {dig(result, 'accuracy', 'reason') or 'no labels'}"
        if reference.get("teacher_top1") is None:
            return "not measured: no reference top-1 to compare with (a model file needs --reference and --data with y)"
    if budget in ("quality_drop", "min_quality"):
        q = result.get("quality")
        if not q:
            return "not measured: this result has no quality record (a results file from before quality metrics)"
        if not q.get("measured"):
            return f"not measured: {q.get('metric')}: {q.get('reason') or 'no reason recorded'}"
        if budget == "quality_drop" and q.get("teacher") is None:
            return (f"not measured: no reference {q.get('metric')} to compare with"
                    + (f" ({q['teacher_reason']})" if q.get("teacher_reason") else ""))
    return "not measured"


# Budgets that are floors: the value must reach the limit (every other budget is a ceiling).
AT_LEAST = frozenset({"min_quality"})


def check_result(target: str, result: dict, budgets: BudgetTable, reference: dict) -> list[Check]:
    limits = budgets.for_backend(result["backend"]).model_dump(exclude_none=True)
    checks = []
    for budget, limit in limits.items():
        value = METRICS[budget](result, reference)
        if result["status"] in ("inconclusive", "error", "skipped"):
            outcome, detail = INCONCLUSIVE, result["status_detail"]
        elif result["status"] == "invalid" and budget in ("p90_ms", "cold_start_ms"):
            outcome, detail = INVALID, result["status_detail"]
        elif budget == "p90_ms" and value is None and (bound := _p90_bound(result)) is not None:
            # A tool that prints no p90 (benchmark_model) but a p95 per run: the largest run's p95
            # bounds p90 from above, so it can pass a ceiling, never fail one.
            value = bound if bound <= limit else None
            outcome, detail = ((PASS, f"p90 not printed; its upper bound, the largest run's p95, {bound:.4g} <= {limit:g}")
                               if bound <= limit else
                               (INCONCLUSIVE, f"not measured: p90 not printed; its upper bound, the largest run's "
                                              f"p95, {bound:.4g} > {limit:g} cannot decide"))
        elif value is None or value != value:  # NaN: unreadable (e.g. no /proc), not a number to compare
            outcome, detail = INCONCLUSIVE, _not_measured(budget, result, reference)
        elif budget in AT_LEAST:
            outcome, detail = (PASS, "") if value >= limit else (FAIL, f"{value:.4g} < {limit:g}")
        else:
            outcome, detail = (PASS, "") if value <= limit else (FAIL, f"{value:.4g} > {limit:g}")
        checks.append(Check(target, result["artifact"], budget, limit, value, outcome, detail))
    return checks


def gate_target(target: dict, reference: dict) -> list[Check]:
    # A hand-edited results file ("10" for a number) is a config error naming the key, not a crash.
    budgets = validate(BudgetTable, target["budgets"], f"results: target {target['name']!r}: budgets")
    checks: list[Check] = []
    for result in target["results"]:
        # An export-only artifact (no runtime here: Core ML on Linux) was skipped, not measured:
        # it neither passes nor fails. Only a skipped one: a measured result is always gated.
        if result.get("export_only") is True and result["status"] == "skipped":
            continue
        # The teacher, and the unpruned student measured beside a pruned one, are references.
        if result["role"] == "student" and result.get("reference") is not True:
            checks += check_result(target["name"], result, budgets, reference)
    return checks


def verdict(checks: list[Check]) -> str:
    seen = {c.outcome for c in checks}
    if not checks:
        return INCONCLUSIVE  # nothing was gated: never a silent PASS
    return next(v for v in _PRECEDENCE if v in seen)


def final_verdict(checks: list[Check], *documents: dict) -> str:
    """The verdict of the checks, except that an incomplete results file among `documents`
    (an interrupted or crashed bench) is INCONCLUSIVE whatever was measured before it stopped:
    what was never measured cannot pass, and a partial run is not the release's measurement."""
    if any(incomplete_reason(d) for d in documents):
        return INCONCLUSIVE
    return verdict(checks)


def candidate_verdicts(checks: list[dict]) -> dict[str, tuple[str, list[dict]]]:
    """artifact -> (its verdict over every target's checks, the checks that did not pass)."""
    by_artifact: dict[str, list[dict]] = {}
    for c in checks:
        by_artifact.setdefault(c["artifact"], []).append(c)
    return {name: (verdict([Check(**c) for c in cs]), [c for c in cs if c["outcome"] != PASS])
            for name, cs in by_artifact.items()}


def search_verdict(checks: list[Check]) -> str:
    """A search's verdict (search.py): PASS when one candidate meets every budget on every target;
    else INVALID or INCONCLUSIVE when one of them might (not measured well enough to say);
    FAIL when each candidate failed a budget."""
    outcomes = {v for v, _ in candidate_verdicts([c.to_json() for c in checks]).values()}
    return next((v for v in (PASS, INVALID, INCONCLUSIVE) if v in outcomes), FAIL if outcomes else INCONCLUSIVE)


def gate_results(results: dict) -> tuple[str, list[Check]]:
    checks = [c for t in results["targets"] for c in gate_target(t, results["reference"])]
    if results.get("search") is not None:  # candidates: one that meets every budget is enough
        return (INCONCLUSIVE if incomplete_reason(results) else search_verdict(checks)), checks
    return final_verdict(checks, results), checks


def has_budgets(target: dict) -> bool:
    """Whether a results file's target record sets any budget (its own or a backend's)."""
    budgets = target.get("budgets") or {}
    return any(v is not None for k, v in budgets.items() if k != "overrides") or any(
        v is not None for o in (budgets.get("overrides") or {}).values() for v in o.values())


NOT_GATED = "nothing was gated: {targets} set no budgets, so this is a measurement, not a verdict"


def ungated_reason(results: dict) -> str | None:
    """Why nothing was gated when no target of a complete file sets a budget, else None.

    Only `bench PATH` reads this as a measurement (exit 0, see measurement_exit_code): `compress`
    and `gate` keep "no budgets" INCONCLUSIVE (exit 5), so a CI job that forgets its budgets
    cannot pass by it."""
    targets = results.get("targets") or []
    if not targets or incomplete_reason(results) or any(has_budgets(t) for t in targets):
        return None
    names = ", ".join(repr(t["name"]) for t in targets)
    return NOT_GATED.format(targets=f"target{'s' if len(targets) > 1 else ''} {names}")


def measurement_exit_code(results: dict) -> int:
    """`bench PATH`'s exit code for a file nothing was gated in: 0 when every model was measured
    and the measurement can be trusted, 4 when one is INVALID (busy machine, too few samples,
    integrity check), 5 when one could not be measured (crash, timeout, error, runtime missing)."""
    statuses = {r["status"] for t in results["targets"] for r in t["results"]}
    if statuses & {"inconclusive", "error", "skipped"}:
        return EXIT_INCONCLUSIVE
    if "invalid" in statuses:
        return EXIT_INVALID
    return EXIT_PASS
