"""Markdown report, rendered from a results document alone.

Besides `render`, this module holds the plain-text facts every human-facing report shows under
the main table (problems, cold kind, model cache, early-stopping p90, overheads, sweep), so the
HTML report states them in the same words. Every optional key is read with .get: skipped and
failed results carry only their first block of keys, and "edgedistill.results/1" files lack the
newer blocks altogether.
"""

from __future__ import annotations

from edgedistill.report.results import incomplete_reason, shown_verdict
from edgedistill.report.rows import ROW_HEADERS, cache_medians, fmt, reference_quality, result_rows

DETAIL_HEADERS = ["artifact", "cold start", "p90 ms (early-stopping bound)", "overhead ms (loop / harness)",
                  "model cache: miss → hit ms (saving)"]
SWEEP_HEADERS = ["artifact", "threads", "batch", "status", "p50 ms", "p90 ms", "samples/s"]


# ---------------------------------------------------------------- facts shared with the HTML report


def problem_lines(r: dict) -> list[str]:
    """Why a result is not plainly ok: each named problem, else the status detail."""
    if r.get("problems"):
        return [f"{p.get('kind', 'problem')}: {p.get('detail', '')}" for p in r["problems"]]
    if r.get("status") != "ok":
        return [r.get("status_detail") or "(no detail recorded)"]
    return []


def quantization_text(q: dict) -> str:
    """How an INT8 artifact was chosen: `percentile, top-1 drop 0.25 pt on the validation split
    (allowed 1); the default lost 80.00`, saying so when no quantization met the allowed drop."""
    default = next((t for t in q.get("tried") or [] if t.get("method") == "default"), None)
    text = (f"{q.get('method')}{' quantization' if q.get('method') == 'default' else ''}, top-1 drop "
            f"{q.get('drop_pt', 0):.2f} pt on the validation split (allowed {q.get('max_drop_pt', 0):g})")
    if q.get("method") != "default" and default is not None:
        text += f"; the default lost {default['drop_pt']:.2f}"
    return text if q.get("met") else f"{text}: NONE met the allowed drop, kept the one that lost least"


def quantization_lines(results: list[dict]) -> list[str]:
    """One line per INT8 artifact whose default quantization missed the allowed drop."""
    return [f"- `{r['artifact']}` INT8 chosen by measurement: {quantization_text(q)}"
            for r in results if (q := r.get("quantization")) and (q.get("method") != "default" or not q.get("met"))]


def cache_text(cache: dict | None) -> str:
    if not cache:
        return "—"
    if cache.get("error"):
        return f"not measured: {cache['error']}"
    miss, hit = cache_medians(cache)
    text = f"miss {fmt(miss, '.0f')} → hit {fmt(hit, '.0f')}"
    if cache.get("saving_ms") is not None:
        text += f" (saves {cache['saving_ms']:.0f} ms, {fmt(cache.get('saving_pct'), '.0f')} %)"
    return text


def detail_row(r: dict) -> list[str]:
    cold = r.get("cold") or {}
    warm = r.get("warm") or {}
    summary = warm.get("summary") or {}
    p90, bound = summary.get("p90_ms"), summary.get("p90_early_stopping_ms")
    if p90 is None:
        p90_text = "—"
    elif bound is None and "p90_early_stopping_ms" in summary:
        p90_text = f"{p90:.3f} (too few samples for a bound)"
    else:
        p90_text = f"{p90:.3f} ({fmt(bound, '.3f')})"
    loop, harness = warm.get("loop_overhead_ms"), warm.get("harness_overhead_ms")
    overhead = "—" if loop is None and harness is None else f"{fmt(loop, '.4f')} / {fmt(harness, '.4f')}"
    return [r["artifact"], cold.get("kind") or "—", p90_text, overhead, cache_text(cold.get("cache"))]


def detail_rows(results: list[dict]) -> list[list[str]]:
    """One row per result that measured something (cold start or warm loop)."""
    return [detail_row(r) for r in results if r.get("cold") or r.get("warm")]


def sweep_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        for p in r.get("sweep") or []:
            summary = p.get("summary") or {}
            status = p.get("status", "—") + (f": {p['detail']}" if p.get("detail") else "")
            rows.append([r["artifact"], str(p.get("threads", "—")), str(p.get("batch_size", "—")), status,
                         fmt(summary.get("p50_ms"), ".3f"), fmt(summary.get("p90_ms"), ".3f"),
                         fmt(p.get("samples_per_s"), ".0f")])
    return rows


NO_WEIGHTS_FILE = "none (factory's own initialisation)"  # a teacher entrypoint without a weights file


def teacher_facts(ref: dict) -> list[tuple[str, str]]:
    """The teacher's validation score and weights, so a reader can tell a damaged teacher that
    still scores above chance (and so passed the weak-teacher check) from the one meant.
    Results of `bench PATH` have no teacher: their models' sources are in file_facts."""
    if ref.get("models_from") == "files":
        return []
    score, samples = ref.get("teacher_val_top1"), ref.get("teacher_val_samples")
    if "teacher_val_top1" not in ref:
        score_text = "not recorded"
    elif score is None:
        score_text = "— (no classes: embedding teacher)"
    else:
        score_text = f"{score * 100:.2f} %" + (f" on {samples} samples" if samples else "")
    if "teacher_weights_sha256" not in ref:
        weights = "not recorded"
    else:
        files = ref.get("teacher_weights_files") or []
        weights = "; ".join(f"{f.get('path')} sha256 {f.get('sha256')}" for f in files) or NO_WEIGHTS_FILE
    return [("teacher top-1 on its validation split (checked before distillation)", score_text),
            ("teacher weights", weights), *pruning_facts(ref)]


def pruning_facts(ref: dict) -> list[tuple[str, str]]:
    """What [compress.prune] removed and what it cost on validation, before and after recovery."""
    p = (ref.get("distill") or {}).get("pruning")
    if not isinstance(p, dict) or not p.get("params_before") or not p.get("macs_before"):
        return []
    score = "top-1" if p.get("score") == "val_acc" else str(p.get("score", "score"))
    return [(f"pruning ({p.get('form')}, {p.get('importance')} importance, {p.get('recovery_epochs')} recovery epochs)",
             f"params {p['params_before']:,} -> {p['params_after']:,} ({p['params_after'] / p['params_before']:.1%}), "
             f"MACs {p['macs_before'] / 1e6:.2f} M -> {p['macs_after'] / 1e6:.2f} M "
             f"({p['macs_after'] / p['macs_before']:.1%}); validation {score} {p['val_before']:.2%} before, "
             f"{p['val_pruned']:.2%} pruned, {p['val_after']:.2%} after recovery")]


def file_facts(results: dict) -> list[str]:
    """For results of `bench PATH`: what the inputs were, where each model came from, how each
    model's outputs compare with the reference's, and whether anything was gated."""
    ref = results.get("reference") or {}
    if ref.get("models_from") != "files":
        return []
    lines = [f"inputs: {ref.get('inputs') or 'not recorded'}"]
    if ref.get("reference_model"):
        lines.append(f"reference: {ref['reference_model'].get('path')} sha256 {ref['reference_model'].get('sha256')}")
    seen = set()
    for target in results.get("targets") or []:
        for r in target.get("results") or []:
            src = r.get("source") or {}
            if r["artifact"] not in seen and src:
                seen.add(r["artifact"])
                lines.append(f"{r['artifact']}: {src.get('path')} sha256 {src.get('sha256')} (given by {src.get('given_by')})")
            if comp := r.get("reference_comparison"):
                drawn = (ref.get("inputs_detail") or {}).get("kind") == "synthetic"
                lines.append(f"{target['name']}: {r['artifact']} vs reference {comp.get('reference')}: "
                             + reference_text(comp)
                             + (" (on drawn inputs, which a quantized model may not be calibrated for: "
                                "--data gives real ones)" if drawn and comp.get("comparable") else ""))
    if results.get("not_gated"):
        lines.append(results["not_gated"])
    return lines


def reference_text(comp: dict) -> str:
    if not comp.get("comparable"):
        return f"not compared ({comp.get('reason')})"
    agree = comp.get("top1_agreement")
    return ((f"top-1 agreement {agree * 100:.2f} %, " if agree is not None else "")
            + f"max abs diff {comp['max_abs_diff']:.3g}, mean abs diff {comp['mean_abs_diff']:.3g}, "
            f"cosine mean {comp['mean_cosine']:.6f} (min {comp['min_cosine']:.6f}) on {comp['samples']} samples")


def check_value(c: dict) -> str:
    return "—" if c.get("value") is None else f"{c['value']:.4g}"


# ---------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    # A "|" inside a cell would end it; a newline would end the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _environment_line(env: dict) -> str:
    load = env.get("load_average")
    load_text = "unreadable" if not load else ", ".join(f"{x:g}" for x in load)
    cores = f"{env.get('logical_cores', '?')} logical cores"
    if env.get("usable_cores") is not None and env.get("usable_cores") != env.get("logical_cores"):
        cores += f" ({env['usable_cores']} usable)"
    return (f"Machine: {env.get('cpu_model') or 'unknown CPU'}, {cores}, governor "
            f"{env.get('governor') or 'unreadable'}, load average before {load_text}.")


def _target_section(target: dict) -> list[str]:
    results = target.get("results") or []
    out = [
        (f"## Target `{target['name']}` ({target.get('device', '?')}, {target.get('threads', '?')} thread(s), "
         f"runner {target.get('runner', '?')})"),
        "",
        _table(ROW_HEADERS, result_rows(results)),
        "",
    ]
    notes = [(r, line) for r in results for line in problem_lines(r)]
    for r, line in notes:
        out.append(f"- `{r['artifact']}` **{r.get('status', '?')}**: {line}")
    if notes:
        out.append("")
    if quantized := quantization_lines(results):
        out += [*quantized, ""]
    details = detail_rows(results)
    if details:
        out += [_table(DETAIL_HEADERS, details), ""]
    sweep = sweep_rows(results)
    if sweep:
        out += [f"Sweep on `{target['name']}` (extra warm runs, reported, not gated):", "",
                _table(SWEEP_HEADERS, sweep), ""]
    return out


def _budget_section(checks: list[dict]) -> list[str]:
    """One row per gated artifact and a column per budget, then what was not a PASS, each
    distinct reason once: a compact page for a CI step summary, which every run appends to."""
    budgets = list(dict.fromkeys(c["budget"] for c in checks))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    reasons: dict[tuple[str, str, str, str], list[str]] = {}
    for c in checks:
        key = (c["target"], c["artifact"])
        cells.setdefault(key, {})[c["budget"]] = f"{c['outcome']} {check_value(c)} / {c['limit']:g}"
        if c["outcome"] != "PASS":
            reasons.setdefault((c["outcome"], *key, c.get("detail") or ""), []).append(c["budget"])
    rows = [[target, artifact, *(row.get(b, "") for b in budgets)] for (target, artifact), row in cells.items()]
    lines = [_table(["target", "artifact", *budgets], rows)]
    if reasons:
        lines.append("")
    for (outcome, target, artifact, detail), names in reasons.items():
        lines.append(f"- **{outcome}** `{target}` `{artifact}` {', '.join(names)}" + (f": {detail}" if detail else ""))
    return lines


def _verdict_text(results: dict) -> str:
    verdict = shown_verdict(results)
    if results.get("not_gated") and not incomplete_reason(results):
        return f"{verdict} (not gated: no budgets; a measurement)"
    return str(verdict)


def render(results: dict) -> str:
    env = results.get("environment") or {}
    ref = results.get("reference") or {}
    teacher = ref.get("teacher_top1")
    out = [
        f"# edgedistill report: {results.get('run', '?')}",
        "",
        (f"**Verdict: {_verdict_text(results)}** · {results.get('created', '?')} · "
         f"edgedistill {env.get('tool_version', '?')}"),
        "",
        _environment_line(env),
    ]
    if ref.get("models_from") == "files":  # `bench PATH`: no teacher; the models' sources instead
        out += [f"- {_cell(line)}" for line in file_facts(results)] + [""]
    else:
        out += [
            (f"Teacher top-1 (PyTorch, held-out split of {ref.get('test_samples')}): "
             f"{'—' if teacher is None else f'{teacher * 100:.2f}%'}."),
            *([f"{q[0][0].upper()}{q[0][1:]} (PyTorch, the reference of the quality metric): {q[1]}."]
              if (q := reference_quality(ref)) else []),
            *(f"{label[0].upper()}{label[1:]}: {_cell(value)}." for label, value in teacher_facts(ref)),
            "",
        ]
    if reason := incomplete_reason(results):
        out += [f"> **Incomplete results, not a verdict:** {_cell(reason)}.", ""]
    for target in results.get("targets") or []:
        out += _target_section(target)
    checks = results.get("checks") or []
    if checks:
        out += ["## Budgets (outcome value / limit)", "", *_budget_section(checks), ""]
    speedups = (results.get("summary") or {}).get("speedups", [])
    if speedups:
        out += ["## Student vs teacher", ""] + [f"- {line}" for line in speedups] + [""]
    if results.get("search"):
        from edgedistill.search import rows_for_display, search_lines

        headers, rows = rows_for_display(results)
        out += ["## Search (* Pareto front of accuracy against p90, > chosen)", "",
                _table(headers, rows), "", *(f"- {_cell(line)}" for line in search_lines(results)), ""]
    return "\n".join(out)
