"""One row per measured artifact: shared by the terminal table, Markdown and CSV."""

from __future__ import annotations

from edgedistill.report.results import COLD_PARTS

ROW_HEADERS = [
    "artifact", "status", "p50 ms", "p90 ms", "p99 ms", "cold ms = start+import+read+compile+first",
    "top-1 %", "agree %", "size MB", "peak MB",
]


def fmt(value, spec: str) -> str:
    """The value formatted by `spec`, or a dash where it was not measured."""
    return "—" if value is None else format(value, spec)


def cache_medians(cache: dict | None) -> tuple[float | None, float | None]:
    """Median cold-start totals with the runtime's model cache empty (miss) and filled (hit)."""
    cache = cache or {}
    miss, hit = (((cache.get(side) or {}).get("total_ms") or {}).get("median") for side in ("miss", "hit"))
    return miss, hit


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100  # 0.0 is a real accuracy, not "missing"


def cold_text(r: dict) -> str:
    cold = r.get("cold")
    if not cold or "total_ms" not in cold:
        return "—"
    parts = "+".join(fmt(cold.get(p, {}).get("median"), ".0f") for p in COLD_PARTS)
    return f"{cold['total_ms']['median']:.0f} ({parts})"


def result_row(r: dict) -> list[str]:
    warm = r.get("warm", {}).get("summary", {})
    acc = r.get("accuracy", {})
    return [
        r["artifact"],
        r["status"],
        fmt(warm.get("p50_ms"), ".3f"),
        fmt(warm.get("p90_ms"), ".3f"),
        fmt(warm.get("p99_ms"), ".3f"),
        cold_text(r),
        fmt(_pct(acc.get("top1")), ".2f"),
        fmt(_pct(acc.get("teacher_agreement")), ".1f"),
        fmt(None if r["size_bytes"] is None else r["size_bytes"] / 2**20, ".2f"),
        fmt(r.get("memory", {}).get("peak_rss_mb"), ".0f"),
    ]


def result_rows(results: list[dict]) -> list[list[str]]:
    return [result_row(r) for r in results]
