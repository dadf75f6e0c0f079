"""Rich tables for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgedistill.report.rows import ROW_HEADERS, result_rows

if TYPE_CHECKING:
    from edgedistill.regression import Comparison

_STYLE = {"PASS": "green", "FAIL": "red", "INVALID": "yellow", "INCONCLUSIVE": "magenta"}


def print_results(results: dict, console: Console) -> None:
    from edgedistill.report.markdown import teacher_facts

    for label, value in teacher_facts(results.get("reference") or {}):
        console.print(f"{label}: {value}", markup=False, highlight=False)
    for target in results["targets"]:
        # Every string from a results file is text, never rich markup: a name like "[/x]" would
        # vanish or crash the renderer.
        table = Table(title=escape(f"{target['name']} · {target['device']} · {target['threads']} thread(s)"))
        for h in ROW_HEADERS:
            table.add_column(h, justify="left" if h in ("artifact", "status") else "right")
        for row in result_rows(target["results"]):
            table.add_row(*map(escape, row))
        console.print(table)
    for line in (results.get("summary") or {}).get("speedups") or []:
        console.print(f"  {line}", markup=False)
    print_checks(results, console)
    print_search(results, console)


def print_search(results: dict, console: Console) -> None:
    """A search's candidates, the Pareto front (*) and the chosen one (>), then what it found."""
    from edgedistill.search import rows_for_display, search_lines

    if not results.get("search"):
        return
    headers, rows = rows_for_display(results)
    table = Table(title="search (* Pareto front of accuracy against p90, > chosen)")
    for h in headers:
        table.add_column(h, justify="left" if h in ("", "candidate", "target", "verdict", "misses") else "right")
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
    for line in search_lines(results):
        console.print(line, markup=False, highlight=False)


def print_checks(results: dict, console: Console) -> None:
    """Every outcome, one row per gated artifact and one column per budget."""
    checks = results["checks"]
    if checks:
        budgets = list(dict.fromkeys(c["budget"] for c in checks))
        table = Table(title="budgets (value / limit)")
        table.add_column("target")
        table.add_column("artifact")
        for b in budgets:
            table.add_column(escape(b), justify="right")
        rows: dict[tuple[str, str], dict[str, str]] = {}
        for c in checks:
            value = "—" if c["value"] is None else _num(c["value"])
            cell = f"[{_STYLE[c['outcome']]}]{c['outcome']}[/] {value} / {c['limit']:g}"
            rows.setdefault((c["target"], c["artifact"]), {})[c["budget"]] = cell
        for (target, artifact), cells in rows.items():
            table.add_row(escape(target), escape(artifact), *(cells.get(b, "") for b in budgets))
        console.print(table)
        for c in checks:
            if c["outcome"] != "PASS" and c["detail"]:
                console.print(f"  [{_STYLE[c['outcome']]}]{c['outcome']}[/] "
                              + escape(f"{c['artifact']} {c['budget']}: {c['detail']}"))
    v = results["verdict"]
    if results.get("not_gated"):  # `bench PATH` on a target without budgets: a measurement
        console.print(f"verdict: none, not gated ([bold {_STYLE[v]}]{v}[/] to `gate`): no budgets")
        return
    console.print(f"verdict: [bold {_STYLE[v]}]{v}[/]")


def print_doctor(rows: list[dict], console: Console) -> None:
    table = Table(title="backends")
    for h in ("backend", "usable", "version", "why not / fix"):
        table.add_column(h)
    for r in rows:
        fix = "" if r["usable"] else f"{r['reason']}" + (f" (extra: edgedistill[{r['extra']}])" if r["extra"] else "")
        # A usable backend with a note exports but cannot run here (Core ML on Linux).
        usable = "[green]yes[/]" if r["usable"] and not r.get("note") else "[yellow]export only[/]" if r["usable"] else "[red]no[/]"
        # escape: "[litert]" in a pip hint is text, not rich markup (which would drop it)
        table.add_row(r["backend"], usable, escape(r["version"] or "—"), escape(r.get("note") or fix))
    console.print(table)


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def print_comparison(comparison: Comparison, console) -> None:
    """The compare table (rich), then the notes and a one-line summary."""
    from edgedistill.regression import format_p, format_spread, notes

    table = Table(title=f"base vs head over runs (regression: slower by > max({comparison.max_regression_pct:g} %, "
                        f"base run spread) warm, > max({comparison.max_cold_regression_pct:g} %, spread) cold start, "
                        f"and one-sided p < {comparison.alpha:g})")
    for h in ("target", "artifact", "metric", "runs base/head", "base median", "head median", "base spread",
              "delta %", "95% CI of ratio", "p (two-sided)", "verdict"):
        table.add_column(h, justify="left" if h in ("target", "artifact", "metric", "verdict") else "right")
    style = {"slower": "yellow", "faster": "green", "same": "dim"}
    for m in comparison.metrics:
        ci = f"{m.ratio_ci[0]:.3f}–{m.ratio_ci[1]:.3f}" if m.ratio_ci else "—"
        word = "[bold red]slower (regression)[/]" if m.regression else f"[{style[m.verdict]}]{m.verdict}[/]"
        if m.untestable:
            word += " [dim](untestable)[/]"
        artifact = m.artifact + (" (reference)" if m.role == "teacher" else "")
        table.add_row(escape(m.target), escape(artifact), m.metric, f"{m.base_n}/{m.head_n}",
                      f"{m.base_median:.4g} ms", f"{m.head_median:.4g} ms", format_spread(m.base_spread_pct),
                      f"{m.delta_pct:+.1f}", ci, format_p(m.p_two_sided), word)
    console.print(table)
    for line in notes(comparison.to_json()):
        console.print(f"  {line}", markup=False)
    n = len(comparison.regressions)
    console.print(f"{n} regression(s)" if n else "no regression", style="bold red" if n else "bold green")
