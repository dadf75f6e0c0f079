"""CSV: one row per artifact per target, from a results document alone."""

from __future__ import annotations

import csv
import io

from edgedistill.report.results import COLD_PARTS, dig
from edgedistill.report.rows import cache_medians

FIELDS = ["target", "artifact", "role", "precision", "backend", "status", "threads", "p50_ms", "p90_ms",
          "p99_ms", "mean_ms", "p90_early_stopping_ms", "cold_kind", "cold_total_ms", "interpreter_ms",
          "import_ms", "read_ms", "compile_ms", "first_inference_ms", "cache_miss_ms", "cache_hit_ms", "top1",
          "teacher_agreement", "quality_metric", "quality", "quality_teacher", "quality_drop", "cosine",
          "recall_at_10", "size_bytes", "peak_rss_mb"]


def render(results: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    writer.writeheader()
    for target in results["targets"]:
        for r in target["results"]:
            warm = dig(r, "warm", "summary") or {}
            cold = r.get("cold") or {}
            cache_miss, cache_hit = cache_medians(cold.get("cache"))
            writer.writerow({
                "target": target["name"], "artifact": r["artifact"], "role": r["role"],
                "precision": r["precision"], "backend": r["backend"], "status": r["status"],
                "threads": r["threads"], "p50_ms": warm.get("p50_ms"), "p90_ms": warm.get("p90_ms"),
                "p99_ms": warm.get("p99_ms"), "mean_ms": warm.get("mean_ms"),
                "p90_early_stopping_ms": warm.get("p90_early_stopping_ms"),
                "cold_kind": cold.get("kind"),
                "cold_total_ms": dig(cold, "total_ms", "median"),
                **{p: dig(cold, p, "median") for p in COLD_PARTS},
                "cache_miss_ms": cache_miss, "cache_hit_ms": cache_hit,
                "top1": dig(r, "accuracy", "top1"),
                "teacher_agreement": dig(r, "accuracy", "teacher_agreement"),
                "quality_metric": dig(r, "quality", "metric"), "quality": dig(r, "quality", "value"),
                "quality_teacher": dig(r, "quality", "teacher"), "quality_drop": dig(r, "quality", "drop"),
                "cosine": dig(r, "quality", "metrics", "cosine", "value"),
                "recall_at_10": dig(r, "quality", "metrics", "recall@10", "value"),
                "size_bytes": r["size_bytes"], "peak_rss_mb": dig(r, "memory", "peak_rss_mb"),
            })
    # An interrupted run: the planned artifacts it never measured are rows too, so a sheet
    # built from this file cannot read as the whole run.
    for m in results.get("missing") or []:
        writer.writerow({"target": m["target"], "artifact": m["artifact"], "status": "missing"})
    return buf.getvalue()
