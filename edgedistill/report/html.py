"""A self-contained HTML report: one page, rendered from a results document alone.

No external resources (no scripts, stylesheets, fonts or images fetched): the style sheet is
inline and the plots are inline SVG drawn by matplotlib, so the file can be archived as a CI
artifact and opened anywhere, years later. Every piece of text from the results file goes
through html.escape; the SVG text is escaped by matplotlib's XML writer.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from edgedistill.report.markdown import (
    DETAIL_HEADERS,
    SWEEP_HEADERS,
    check_value,
    detail_rows,
    file_facts,
    problem_lines,
    sweep_rows,
    teacher_facts,
)
from edgedistill.report.results import incomplete_reason, shown_verdict
from edgedistill.report.rows import ROW_HEADERS, reference_quality, result_rows

OUTCOMES = ("FAIL", "INVALID", "INCONCLUSIVE", "PASS")

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
h3 { margin-top: 1.5rem; }
table { border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } td:first-child, th:first-child, td.text { text-align: left; }
table.kv th { text-align: left; }
.verdict { display: inline-block; padding: .2rem .8rem; border-radius: 4px; font-weight: 700; color: #fff; }
.PASS { background: #1a7f37; } .FAIL { background: #cf222e; }
.INVALID { background: #bf8700; } .INCONCLUSIVE { background: #8250df; }
td.PASS, td.FAIL, td.INVALID, td.INCONCLUSIVE { color: #fff; font-weight: 600; text-align: left; }
td.status-ok { color: #1a7f37; } td.status-invalid { color: #9a6700; font-weight: 600; }
td.status-inconclusive, td.status-error, td.status-skipped { color: #8250df; font-weight: 600; }
figure { margin: 1rem 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
figure svg { max-width: 100%; height: auto; }
.note { color: #59636e; font-style: italic; } .muted { color: #59636e; }
ul.problems li { margin: .2rem 0; }
p.incomplete { border-left: 4px solid #8250df; padding: .3rem .7rem; background: #fbefff; }
"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], cell_classes: list[list[str]] | None = None,
           table_class: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        classes = list(cell_classes[i]) if cell_classes else []
        classes += [""] * (len(row) - len(classes))  # a short class list must never drop a cell
        cells = "".join(f'<td class="{_e(c)}">{_e(v)}</td>' if c else f"<td>{_e(v)}</td>"
                        for v, c in zip(row, classes))
        body.append(f"<tr>{cells}</tr>")
    cls = f' class="{_e(table_class)}"' if table_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td class=\"text\">{_e('—' if v is None else v)}</td></tr>"
                   for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _plot(p) -> str:
    if p.svg is None:
        return f'<p class="note">{_e(p.title)}: {_e(p.note)}</p>'
    # The SVG comes from matplotlib, which escapes the text it writes; it is inserted as markup.
    return f"<figure><figcaption>{_e(p.title)}</figcaption>{p.svg}</figure>"


# ---------------------------------------------------------------- sections


def _header(results: dict) -> str:
    env = results.get("environment") or {}
    verdict = shown_verdict(results) or "—"
    reason = incomplete_reason(results)
    shown = verdict + (" (not gated: no budgets; a measurement)" if results.get("not_gated") and not reason else "")
    counts = Counter(c.get("outcome") for c in results.get("checks") or [])
    tally = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]) or "no budget checked"
    return (f"<header><h1>edgedistill report: {_e(results.get('run'))}</h1>"
            f'<p><span class="verdict {_e(verdict)}">Verdict: {_e(shown)}</span> '
            f'<a href="#budgets">{_e(tally)}</a></p>'
            + (f'<p class="incomplete"><strong>Incomplete results, not a verdict:</strong> {_e(reason)}.</p>'
               if reason else "") +
            f'<p class="muted">{_e(results.get("created"))} · edgedistill {_e(env.get("tool_version"))} · '
            f"schema {_e(results.get('schema'))}</p></header>")


def _environment(results: dict) -> str:
    env = results.get("environment") or {}
    ref = results.get("reference") or {}
    load = env.get("load_average")
    teacher = ref.get("teacher_top1")
    pairs = [
        ("CPU", env.get("cpu_model")), ("logical cores", env.get("logical_cores")),
        ("usable cores", env.get("usable_cores")), ("governor", env.get("governor") or "unreadable"),
        ("load average (1, 5, 15 min)", ", ".join(f"{x:g}" for x in load) if load else "unreadable"),
        ("python", env.get("python")), ("platform", env.get("platform")), ("machine", env.get("machine")),
        ("seed", env.get("seed")),
    ]
    if env.get("thermal"):
        pairs.append(("thermal", env["thermal"]))
    pairs += [(f"version: {dist}", version or "not installed")
              for dist, version in (env.get("versions") or {}).items()]
    if ref.get("models_from") == "files":  # `bench PATH`: no teacher; the models' sources instead
        pairs += [("model files", line) for line in file_facts(results)]
    else:
        pairs += [("teacher top-1 (PyTorch)", None if teacher is None else f"{teacher * 100:.2f} %"),
                  *([(f"{q[0]} (PyTorch)", q[1])] if (q := reference_quality(ref)) else []),
                  ("held-out samples", ref.get("test_samples")), *teacher_facts(ref)]
    return f"<section><h2>Environment</h2>{_kv_table(pairs)}</section>"


def _status_classes(results: list[dict]) -> list[list[str]]:
    return [["text", f"status-{r.get('status', '')}", *[""] * (len(ROW_HEADERS) - 2)] for r in results]


def _budgets_line(target: dict) -> str:
    budgets = target.get("budgets") or {}
    plain = [f"{k} ≤ {v:g}" for k, v in budgets.items() if k != "overrides" and v is not None]
    overrides = [f"{backend}: " + ", ".join(f"{k} ≤ {v:g}" for k, v in values.items() if v is not None)
                 for backend, values in (budgets.get("overrides") or {}).items()]
    text = "; ".join(plain) or "none"
    if overrides:
        text += " (overrides: " + "; ".join(overrides) + ")"
    return f"<p>Budgets: {_e(text)}</p>"


def _target(target: dict) -> str:
    from edgedistill.report import plots

    results = target.get("results") or []
    parts = [
        f"<section><h2>Target {_e(target['name'])}</h2>",
        (f'<p class="muted">device {_e(target.get("device"))} · {_e(target.get("threads"))} thread(s) · '
         f"runner {_e(target.get('runner'))}</p>"),
        _budgets_line(target),
        _table(ROW_HEADERS, result_rows(results), _status_classes(results)),
    ]
    notes = [(r, line) for r in results for line in problem_lines(r)]
    if notes:
        parts.append("<h3>Problems and status</h3><ul class=\"problems\">")
        parts += [f"<li><code>{_e(r['artifact'])}</code> <strong>{_e(r.get('status'))}</strong>: {_e(line)}</li>"
                  for r, line in notes]
        parts.append("</ul>")
    details = detail_rows(results)
    if details:
        parts += ["<h3>Measurement details</h3>",
                  _table(DETAIL_HEADERS, details, [["text"] * len(DETAIL_HEADERS)] * len(details))]
    sweep = sweep_rows(results)
    if sweep:
        classes = [["text", "", "", "text", "", "", ""]] * len(sweep)
        parts += ["<h3>Sweep (extra warm runs, reported, not gated)</h3>", _table(SWEEP_HEADERS, sweep, classes)]
    parts += [_plot(p) for p in plots.target_plots(target)]
    parts.append("</section>")
    return "".join(parts)


def _checks(results: dict) -> str:
    checks = results.get("checks") or []
    if not checks:
        return ('<section id="budgets"><h2>Budgets</h2><p class="note">No budget was checked '
                f"(verdict {_e(results.get('verdict'))}).</p></section>")
    headers = ["outcome", "target", "artifact", "budget", "limit", "value", "detail"]
    rows = [[c["outcome"], c["target"], c["artifact"], c["budget"], f"{c['limit']:g}", check_value(c),
             c.get("detail") or ""] for c in checks]
    classes = [[c["outcome"], "text", "text", "text", "", "", "text"] for c in checks]
    return f'<section id="budgets"><h2>Budgets</h2>{_table(headers, rows, classes)}</section>'


def _overall(results: dict) -> str:
    from edgedistill.report import plots

    figures = "".join(_plot(p) for p in plots.overall_plots(results))
    speedups = (results.get("summary") or {}).get("speedups") or []
    lines = "".join(f"<li>{_e(s)}</li>" for s in speedups)
    return (f"<section><h2>Across targets</h2>{figures}"
            + (f"<h3>Student vs teacher</h3><ul>{lines}</ul>" if lines else "") + "</section>")


def _search(results: dict) -> str:
    """The search's candidates: the table, what it found, and the plot of the front."""
    from edgedistill.report import plots
    from edgedistill.search import rows_for_display, search_lines

    if not results.get("search"):
        return ""
    headers, rows = rows_for_display(results)
    lines = "".join(f"<li>{_e(s)}</li>" for s in search_lines(results))
    return (f"<section><h2>Search</h2>{_plot(plots.search_front(results))}"
            f"{_table(headers, rows)}<ul>{lines}</ul></section>")


def render(results: dict) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>edgedistill report: {_e(results.get('run'))} ({_e(shown_verdict(results))})</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        _header(results),
        _environment(results),
        *(_target(t) for t in results.get("targets") or []),
        _overall(results),
        _search(results),
        _checks(results),
        "</main></body></html>",
        "",
    ])
