"""Rich tables for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgedistill.report.rows import ROW_HEADERS, result_rows

_STYLE = {"PASS": "green", "FAIL": "red", "INVALID": "yellow", "INCONCLUSIVE": "magenta"}


def print_results(results: dict, console: Console) -> None:
    for target in results["targets"]:
        table = Table(title=f"{target['name']} · {target['device']} · {target['threads']} thread(s)")
        for h in ROW_HEADERS:
            table.add_column(h, justify="left" if h in ("artifact", "status") else "right")
        for row in result_rows(target["results"]):
            table.add_row(*row)
        console.print(table)
    for line in results.get("summary", {}).get("speedups", []):
        console.print(f"  {line}")
    print_checks(results, console)


def print_checks(results: dict, console: Console) -> None:
    """Every outcome, one row per gated artifact and one column per budget."""
    checks = results["checks"]
    if checks:
        budgets = list(dict.fromkeys(c["budget"] for c in checks))
        table = Table(title="budgets (value / limit)")
        table.add_column("target")
        table.add_column("artifact")
        for b in budgets:
            table.add_column(b, justify="right")
        rows: dict[tuple[str, str], dict[str, str]] = {}
        for c in checks:
            value = "—" if c["value"] is None else _num(c["value"])
            cell = f"[{_STYLE[c['outcome']]}]{c['outcome']}[/] {value} / {c['limit']:g}"
            rows.setdefault((c["target"], c["artifact"]), {})[c["budget"]] = cell
        for (target, artifact), cells in rows.items():
            table.add_row(target, artifact, *(cells.get(b, "") for b in budgets))
        console.print(table)
        for c in checks:
            if c["outcome"] != "PASS" and c["detail"]:
                console.print(f"  [{_STYLE[c['outcome']]}]{c['outcome']}[/] {c['artifact']} {c['budget']}: {c['detail']}")
    v = results["verdict"]
    console.print(f"verdict: [bold {_STYLE[v]}]{v}[/]")


def print_doctor(rows: list[dict], console: Console) -> None:
    table = Table(title="backends")
    for h in ("backend", "usable", "version", "why not / fix"):
        table.add_column(h)
    for r in rows:
        fix = "" if r["usable"] else f"{r['reason']}" + (f" (extra: edgedistill[{r['extra']}])" if r["extra"] else "")
        table.add_row(r["backend"], "[green]yes[/]" if r["usable"] else "[red]no[/]", r["version"] or "—", fix)
    console.print(table)


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
