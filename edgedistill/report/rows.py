"""One row per measured artifact: shared by the terminal table, Markdown and CSV."""

from __future__ import annotations

from edgedistill.report.results import COLD_PARTS, dig

ROW_HEADERS = [
    "artifact", "status", "p50 ms", "p90 ms", "p99 ms", "cold ms = start+import+read+compile+first",
    "top-1 %", "agree %", "size MB", "peak MB",
]


def fmt(value, spec: str) -> str:
    """The value formatted by `spec`, or a dash where it was not measured."""
    return "—" if value is None else format(value, spec)


def cache_medians(cache: dict | None) -> tuple[float | None, float | None]:
    """Median cold-start totals with the runtime's model cache empty (miss) and filled (hit)."""
    miss, hit = (dig(cache, side, "total_ms", "median") for side in ("miss", "hit"))
    return miss, hit


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100  # 0.0 is a real accuracy, not "missing"


def cold_text(r: dict) -> str:
    total = dig(r, "cold", "total_ms", "median")
    if total is None:
        return "—"
    parts = "+".join(fmt(dig(r, "cold", p, "median"), ".0f") for p in COLD_PARTS)
    return f"{total:.0f} ({parts})"


def result_row(r: dict) -> list[str]:
    warm = dig(r, "warm", "summary") or {}
    acc = r.get("accuracy") or {}
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
        fmt(dig(r, "memory", "peak_rss_mb"), ".0f"),
    ]


def result_rows(results: list[dict]) -> list[list[str]]:
    return [result_row(r) for r in results]
