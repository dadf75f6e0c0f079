"""Markdown report, rendered from a results document alone."""

from __future__ import annotations

from edgedistill.report.rows import ROW_HEADERS, result_rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(results: dict) -> str:
    env = results["environment"]
    ref = results["reference"]
    out = [
        f"# edgedistill report: {results['run']}",
        "",
        f"**Verdict: {results['verdict']}** · {results['created']} · edgedistill {env['tool_version']}",
        "",
        f"Machine: {env['cpu_model']}, {env['logical_cores']} logical cores, governor "
        f"{env.get('governor') or 'unreadable'}, load average before {env.get('load_average')}.",
        f"Teacher top-1 (PyTorch, held-out split of {ref.get('test_samples')}): {ref['teacher_top1'] * 100:.2f}%.",
        "",
    ]
    for target in results["targets"]:
        out += [
            f"## Target `{target['name']}` ({target['device']}, {target['threads']} thread(s), runner {target['runner']})",
            "",
            _table(ROW_HEADERS, result_rows(target["results"])),
            "",
        ]
        notes = [r for r in target["results"] if r["status"] != "ok"]
        for r in notes:
            out.append(f"- `{r['artifact']}`: **{r['status']}**: {r['status_detail']}")
        if notes:
            out.append("")
    if results["checks"]:
        out += ["## Budgets", ""]
        rows = [
            [c["outcome"], c["target"], c["artifact"], c["budget"], f"{c['limit']:g}",
             "—" if c["value"] is None else f"{c['value']:.4g}", c["detail"]]
            for c in results["checks"]
        ]
        out += [_table(["outcome", "target", "artifact", "budget", "limit", "value", "detail"], rows), ""]
    speedups = results.get("summary", {}).get("speedups", [])
    if speedups:
        out += ["## Student vs teacher", ""] + [f"- {line}" for line in speedups] + [""]
    return "\n".join(out)
