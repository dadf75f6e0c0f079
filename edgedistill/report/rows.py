"""One row per measured artifact: shared by the terminal table, Markdown and CSV."""

from __future__ import annotations

ROW_HEADERS = [
    "artifact", "status", "p50 ms", "p90 ms", "p99 ms", "cold ms = start+import+load+first",
    "top-1 %", "agree %", "size MB", "peak MB",
]


def _f(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def cold_text(r: dict) -> str:
    cold = r.get("cold")
    if not cold:
        return "—"
    parts = "+".join(_f(cold[p].get("median"), ".0f") for p in ("interpreter_ms", "import_ms", "load_ms", "first_inference_ms"))
    return f"{cold['total_ms']['median']:.0f} ({parts})"


def result_row(r: dict) -> list[str]:
    warm = r.get("warm", {}).get("summary", {})
    acc = r.get("accuracy", {})
    return [
        r["artifact"],
        r["status"],
        _f(warm.get("p50_ms"), ".3f"),
        _f(warm.get("p90_ms"), ".3f"),
        _f(warm.get("p99_ms"), ".3f"),
        cold_text(r),
        _f(acc.get("top1") and acc["top1"] * 100, ".2f"),
        _f(acc.get("teacher_agreement") and acc["teacher_agreement"] * 100, ".1f"),
        _f(None if r["size_bytes"] is None else r["size_bytes"] / 2**20, ".2f"),
        _f(r.get("memory", {}).get("peak_rss_mb"), ".0f"),
    ]


def result_rows(results: list[dict]) -> list[list[str]]:
    return [result_row(r) for r in results]
