"""CSV: one row per artifact per target, from a results document alone."""

from __future__ import annotations

import csv
import io

FIELDS = ["target", "artifact", "role", "precision", "backend", "status", "threads", "p50_ms", "p90_ms",
          "p99_ms", "mean_ms", "cold_total_ms", "import_ms", "load_ms", "first_inference_ms", "top1",
          "teacher_agreement", "size_bytes", "peak_rss_mb"]


def render(results: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    writer.writeheader()
    for target in results["targets"]:
        for r in target["results"]:
            warm = r.get("warm", {}).get("summary", {})
            cold = r.get("cold", {})
            writer.writerow({
                "target": target["name"], "artifact": r["artifact"], "role": r["role"],
                "precision": r["precision"], "backend": r["backend"], "status": r["status"],
                "threads": r["threads"], "p50_ms": warm.get("p50_ms"), "p90_ms": warm.get("p90_ms"),
                "p99_ms": warm.get("p99_ms"), "mean_ms": warm.get("mean_ms"),
                "cold_total_ms": cold.get("total_ms", {}).get("median"),
                "import_ms": cold.get("import_ms", {}).get("median"),
                "load_ms": cold.get("load_ms", {}).get("median"),
                "first_inference_ms": cold.get("first_inference_ms", {}).get("median"),
                "top1": r.get("accuracy", {}).get("top1"),
                "teacher_agreement": r.get("accuracy", {}).get("teacher_agreement"),
                "size_bytes": r["size_bytes"], "peak_rss_mb": r.get("memory", {}).get("peak_rss_mb"),
            })
    return buf.getvalue()
