"""`compress --search`: the most accurate student that meets every budget, found by measuring.

Candidates are student forms (the distilled student, then each pruning ratio) x precisions x
backends. Each form is pruned, recovered, exported and verified through the same stages as
`compress` (so a second search reuses all of them and only measures again), then measured on
every target by the harness; a candidate is an artifact, and it meets the budgets when each of
its checks on each target passes. No estimate (FLOPs, parameters) ever ranks a candidate: only
what the harness measured and the gate judged.
"""

from __future__ import annotations

import dataclasses
import time

from edgedistill.errors import UsageError
from edgedistill.gate import PASS, candidate_verdicts

SEARCH_FOLDER = "search"  # each form's own results file, beside the run's merged one


def _excess(c: dict) -> float:
    """How far past its limit a check's value is, relative to the limit: 0 for a value within it
    (an INVALID check can be within its limit: measured, but not trustworthy), infinite when
    nothing was measured."""
    from edgedistill.gate import AT_LEAST

    if c["value"] is None or not c["limit"]:
        return float("inf")
    past = c["limit"] - c["value"] if c["budget"] in AT_LEAST else c["value"] - c["limit"]
    return max(0.0, past / abs(c["limit"]))


def table(results: dict) -> list[dict]:
    """One row per candidate per target: what was measured and judged, with the Pareto front
    (top-1 or the run's quality against p90, per target) marked."""
    from edgedistill.report.plots import p90_of, quality_value, run_metric

    metric = run_metric(results)
    verdicts = candidate_verdicts(results.get("checks") or [])
    rows = []
    for target in results["targets"]:
        for r in target["results"]:
            if r["role"] != "student" or r["artifact"] not in verdicts:
                continue
            v, missed = verdicts[r["artifact"]]
            rows.append({
                "candidate": r["artifact"], "target": target["name"], "form": r.get("form"),
                "precision": r["precision"], "backend": r["backend"], "status": r["status"],
                "p50_ms": ((r.get("warm") or {}).get("summary") or {}).get("p50_ms"), "p90_ms": p90_of(r),
                "quality": quality_value(r, metric), "metric": metric,
                "size_mb": None if r.get("size_bytes") is None else r["size_bytes"] / 1e6,
                "verdict": v, "misses": sorted({c["budget"] for c in missed if c["target"] == target["name"]}),
                "pareto": False,
            })
    for row in rows:
        if row["p90_ms"] is None or row["quality"] is None:
            continue
        row["pareto"] = not any(
            o is not row and o["target"] == row["target"] and o["p90_ms"] is not None and o["quality"] is not None
            and o["p90_ms"] <= row["p90_ms"] and o["quality"] >= row["quality"]
            and (o["p90_ms"] < row["p90_ms"] or o["quality"] > row["quality"]) for o in rows)
    return rows


def choose(rows: list[dict]) -> str | None:
    """The most accurate candidate that passed on every target (ties: the lowest p90), or None."""
    by_candidate: dict[str, list[dict]] = {}
    for row in rows:
        by_candidate.setdefault(row["candidate"], []).append(row)
    passed = [(name, rs) for name, rs in by_candidate.items() if rs[0]["verdict"] == PASS]
    if passed:
        def rank(item):
            rs = item[1]
            quality = min((r["quality"] for r in rs if r["quality"] is not None), default=float("-inf"))
            return (-quality, max((r["p90_ms"] or 0) for r in rs))

        return min(passed, key=rank)[0]
    return None


def closest(checks: list[dict]) -> dict | None:
    """The candidate nearest to meeting every budget, with the checks it misses."""
    verdicts = candidate_verdicts(checks)
    if not verdicts:
        return None
    # Fewest budgets failed, then fewest not passed (INVALID, INCONCLUSIVE), then the least excess.
    name, (_, missed) = min(verdicts.items(), key=lambda item: (
        sum(c["outcome"] == "FAIL" for c in item[1][1]), len(item[1][1]), sum(_excess(c) for c in item[1][1])))
    return {"candidate": name, "misses": [
        {"target": c["target"], "budget": c["budget"], "limit": c["limit"], "value": c["value"],
         "outcome": c["outcome"]} for c in missed]}


def describe_miss(miss: dict) -> str:
    parts = [f"{'misses' if m['outcome'] == 'FAIL' else 'does not show it meets'} {m['budget']} "
             f"{'not measured' if m['value'] is None else format(m['value'], '.4g')} "
             f"(limit {m['limit']:g}, {m['outcome']}) on {m['target']}" for m in miss["misses"]]
    return f"closest candidate {miss['candidate']} " + "; ".join(parts)


def _forms(cfg) -> list[float | None]:
    return [None, *sorted(dict.fromkeys(cfg.search.prune_ratios))]


def _merge(merged: dict | None, part: dict) -> dict:
    if merged is None:
        return part
    records = {t["name"]: t for t in merged["targets"]}
    for t in part["targets"]:
        if t["name"] in records:
            records[t["name"]]["results"] += t["results"]
        else:
            merged["targets"].append(t)
    merged["missing"] += part.get("missing") or []
    merged["complete"] = bool(merged.get("complete")) and bool(part.get("complete"))
    return merged


def run_search(ws, ui, first: bool = False) -> dict:
    """Measure candidates until the space, `max_candidates` or `max_time_s` is exhausted (or, with
    `first`, until a form has a candidate that meets every budget); write the run's results.json
    with every candidate, the table and the choice, and the reports."""
    from edgedistill import api
    from edgedistill.bench.environment import environment
    from edgedistill.config import PruneConfig
    from edgedistill.report.results import new_results, write_results

    cfg = ws.cfg
    sc = cfg.search
    unbudgeted = [t.name for t in ws.targets if not api._has_budgets(t)]
    if unbudgeted:
        raise UsageError(f"a search needs budgets to meet; target {unbudgeted[0]!r} sets none",
                         "add [budgets] (e.g. p90_ms, accuracy_drop_pt) to the target profile")
    space = cfg.model_copy(update={
        "compress": cfg.compress.model_copy(update={"precisions": sc.precisions or cfg.compress.precisions}),
        "export": cfg.export.model_copy(update={"backends": sc.backends or cfg.export.backends}),
    })
    ws = dataclasses.replace(ws, cfg=space)
    api.check_backends_asked(space)
    results_path = ws.run_dir / "results.json"
    # Replaced first: until the search ends the run's file is incomplete, never an older verdict.
    write_results(results_path, new_results(cfg.run.name, environment(seed=cfg.run.seed), {}))
    started = time.monotonic()
    d = api.distill(ws, ui)
    merged, measured, stopped = None, 0, "every candidate was measured"
    for ratio in _forms(space):
        elapsed = time.monotonic() - started
        if merged is not None and elapsed > sc.max_time_s:  # the distilled student is always measured
            stopped = f"max_time_s {sc.max_time_s:g} reached after {elapsed:.0f} s"
            break
        form = d if ratio is None else api.prune_student(
            ws, ui, d, PruneConfig(ratio=ratio, importance=sc.importance, recovery_epochs=sc.recovery_epochs))
        artifacts = api.export(ws, ui, form)
        room = sc.max_candidates - measured
        students = [a for a in artifacts if a.role == "student"]
        if len(students) > room:
            keep = {id(a) for a in students[:room]}
            artifacts = [a for a in artifacts if a.role != "student" or id(a) in keep]
            stopped = f"max_candidates {sc.max_candidates} reached"
        part = api.bench(ws, ui, artifacts, form, reports=False,
                         results_path=ws.run_dir / SEARCH_FOLDER / f"{form.form or 'student'}.results.json")
        measured += min(len(students), room)
        merged = _merge(merged, part)
        api.apply_gate(merged)
        if stopped.startswith("max_candidates"):
            break
        if first and any(v == PASS for v, _ in candidate_verdicts(merged["checks"]).values()):
            stopped = "--first: a candidate meets every budget"
            break
    rows = table(merged)
    chosen = choose(rows)
    miss = None if chosen else closest(merged["checks"])
    merged["search"] = {
        "candidates": len({r["candidate"] for r in rows}), "measurements": len(rows),
        "elapsed_s": round(time.monotonic() - started, 1), "stopped": stopped, "first": first,
        "space": {"prune_ratios": sc.prune_ratios, "precisions": space.compress.precisions,
                  "backends": space.export.backends, "importance": sc.importance,
                  "recovery_epochs": sc.recovery_epochs,
                  "max_candidates": sc.max_candidates, "max_time_s": sc.max_time_s},
        "chosen": chosen, "closest": miss, "table": rows,
    }
    merged["summary"] = {"speedups": api.speedups(merged)}
    api.apply_gate(merged)  # the search's verdict (gate.py): PASS when a candidate meets every budget
    write_results(results_path, merged)
    api.write_reports(merged, results_path.parent, ui)
    return merged


def search_lines(results: dict) -> list[str]:
    """What the search found, in plain lines (CLI and Markdown report)."""
    s = results.get("search")
    if not s:
        return []
    head = (f"search: {s['candidates']} candidates ({s['measurements']} measurements) in {s['elapsed_s']:.0f} s; "
            f"{s['stopped']}")
    if s.get("chosen"):
        return [head, f"chosen: {s['chosen']} (the most accurate candidate that meets every budget)"]
    if s.get("closest") and results.get("verdict") in ("INVALID", "INCONCLUSIVE"):
        return [head, f"{results['verdict']}: no candidate was measured well enough to show it meets every budget "
                      f"(see each check's detail); {describe_miss(s['closest'])}"]
    if s.get("closest"):
        return [head, f"no candidate meets every budget: {describe_miss(s['closest'])}"]
    return [head, "no candidate was measured"]


def rows_for_display(results: dict) -> tuple[list[str], list[list[str]]]:
    """The search table as text cells: the Pareto front marked *, the chosen candidate >."""
    s = results.get("search") or {}

    def ms(v):
        return "—" if v is None else f"{v:.3f}"

    def q(row):
        if row["quality"] is None:
            return "—"
        return f"{row['quality'] * 100:.2f} %" if row["metric"] == "top1" else f"{row['quality']:.4f}"

    headers = ["", "candidate", "target", "p50 ms", "p90 ms", "top-1" if (s.get("table") or [{}])[0].get("metric",
               "top1") == "top1" else "quality", "MB", "verdict", "misses"]
    rows = [[(">" if r["candidate"] == s.get("chosen") else "") + ("*" if r["pareto"] else ""), r["candidate"],
             r["target"], ms(r["p50_ms"]), ms(r["p90_ms"]), q(r),
             "—" if r["size_mb"] is None else f"{r['size_mb']:.3f}", r["verdict"], ", ".join(r["misses"])]
            for r in s.get("table") or []]
    return headers, rows

