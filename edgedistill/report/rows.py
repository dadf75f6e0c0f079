"""One row per measured artifact: shared by the terminal table, Markdown and CSV."""

from __future__ import annotations

from edgedistill.report.results import COLD_PARTS, dig

ROW_HEADERS = [
    "artifact", "status", "p50 ms", "p90 ms", "p99 ms", "cold ms = start+import+read+compile+first",
    "quality", "agree %", "size MB", "peak MB",
]


def metric_label(name: str) -> str:
    return "top-1" if name == "top1" else name


def metric_value(name: str, value: float | None) -> str:
    """A metric's value as the reports show it: top-1 in %, the others in their own units."""
    if value is None:
        return "—"
    return f"{value * 100:.2f} %" if name == "top1" else f"{value:.4f}"


def quality_text(r: dict) -> str:
    """The run's metric by name and value ("cosine 0.9876 · recall@10 0.9120"), every metric
    of the task; a result without a quality record (an older file) shows its top-1."""
    q = r.get("quality")
    if not q:
        top1 = dig(r, "accuracy", "top1")
        return "—" if top1 is None else f"top-1 {top1 * 100:.2f} %"
    metrics = q.get("metrics") or {q.get("metric"): q}
    return " · ".join(f"{metric_label(name)} {metric_value(name, m.get('value'))}" for name, m in metrics.items())


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
        quality_text(r),
        fmt(_pct(acc.get("teacher_agreement")), ".1f"),
        fmt(None if r["size_bytes"] is None else r["size_bytes"] / 2**20, ".2f"),
        fmt(dig(r, "memory", "peak_rss_mb"), ".0f"),
    ]


def reference_quality(ref: dict) -> tuple[str, str] | None:
    """("teacher cosine", "1.0000 · recall@10 1.0000"): the reference's value of the run's metric
    on the held-out inputs; None for a top-1 run (the teacher's top-1 line says it) or an older file."""
    q = ref.get("quality") or {}
    if not q or q.get("metric") == "top1":
        return None
    metrics = q.get("metrics") or {q["metric"]: q.get("teacher")}
    first, *rest = metrics.items()
    text = " · ".join([metric_value(first[0], first[1])]
                      + [f"{metric_label(n)} {metric_value(n, v)}" for n, v in rest])
    return f"teacher {metric_label(first[0])}", text


def result_rows(results: list[dict]) -> list[list[str]]:
    return [result_row(r) for r in results]
