"""Plots for the HTML report, each rendered from a results document alone to an inline SVG string.

matplotlib is imported inside the functions that draw, never at module import, so the CLI's
`--help` and the lean-import test stay fast. Figures are built with `matplotlib.figure.Figure`
(no pyplot): no global figure registry, no interactive backend, nothing to close.

Every public function returns a list of `Plot`; a plot whose data is missing comes back with
`svg=None` and a one-line `note` saying why, so the page never shows an empty axes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from edgedistill.report.rows import cache_medians, metric_label

# Cold-start parts in the order they happen. `load_ms` is the single read+compile part of
# "edgedistill.results/1" files; a /2 file has read_ms and compile_ms instead.
COLD_PARTS_ANY_SCHEMA = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "load_ms", "first_inference_ms")
# A spread wider than this (max / min) is drawn on a log axis so the fast artifacts stay visible.
LOG_AXIS_RATIO = 20.0
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Plot:
    title: str
    svg: str | None = None  # the <svg> element, ready to inline
    note: str | None = None  # why there is no plot


def _results(target: dict) -> list[dict]:
    return target.get("results") or []


def _cold_median(r: dict, part: str) -> float | None:
    return ((r.get("cold") or {}).get(part) or {}).get("median")


def p90_of(r: dict) -> float | None:
    return (((r.get("warm") or {}).get("summary")) or {}).get("p90_ms")


def _wide(values: list[float]) -> bool:
    positive = [v for v in values if v and v > 0]
    return bool(positive) and max(positive) / min(positive) > LOG_AXIS_RATIO


# ---------------------------------------------------------------- rendering


def _figure(n_rows: int, *, width: float = 7.5, row_height: float = 0.42, min_height: float = 2.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, max(min_height, 1.1 + row_height * n_rows)), layout="constrained")


def _to_svg(fig, salt: str) -> str:
    """The figure as an <svg> element to inline in HTML.

    Text stays text (svg.fonttype none): smaller, searchable, and escaped by matplotlib's XML
    writer. A salt per plot keeps the generated ids (clip paths, markers) unique across the
    several SVGs of one page and stable from run to run.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    # The XML declaration and DOCTYPE belong to a standalone file, not to an element inside HTML
    # (no metadata block either: every metadata key is None).
    return svg[svg.index("<svg"):]


def _salt(*parts: str) -> str:
    return "edgedistill-" + "-".join(parts)


# ---------------------------------------------------------------- (a) warm latency


def warm_latency(target: dict) -> Plot:
    """Distribution of every warm sample, one box per artifact; p90 (the gated percentile) marked."""
    title = f"{target['name']}: warm latency per inference"
    rows = [(r["artifact"], r["warm"]["samples_ms"], p90_of(r)) for r in _results(target)
            if (r.get("warm") or {}).get("samples_ms")]
    if not rows:
        return Plot(title, note="No warm samples on this target (nothing ran the warm loop).")
    import numpy as np

    fig = _figure(len(rows))
    ax = fig.add_subplot()
    names, data, recorded_p90 = zip(*rows)
    positions = list(range(len(rows), 0, -1))  # first artifact on top, like the table
    # Whiskers at the 1st and 99th percentiles: the fliers are then the slowest 1 %, the tail
    # a budget cares about, rather than whatever Tukey's fence happens to cut.
    ax.boxplot(data, positions=positions, orientation="horizontal", whis=(1, 99), widths=0.6,
               flierprops={"marker": ".", "markersize": 3, "alpha": 0.5})
    # The recorded p90 is the gated number; recomputed only where a file lacks the summary.
    p90 = [float(np.percentile(d, 90)) if v is None else v for d, v in zip(data, recorded_p90)]
    ax.scatter(p90, positions, marker="|", s=160, color="tab:red", zorder=3, label="p90")
    limit = (target.get("budgets") or {}).get("p90_ms")
    if limit is not None:  # the target-wide budget; per-backend overrides are in the checks table
        ax.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"p90 budget {limit:g} ms")
    ax.set_yticks(positions, names)
    if _wide([v for d in data for v in d] + ([limit] if limit is not None else [])):
        ax.set_xscale("log")
    ax.set_xlabel("ms per inference (box: quartiles, whiskers: p1–p99)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("warm", target["name"])))


# ---------------------------------------------------------------- (b) cold start


def cold_start_parts(target: dict) -> Plot:
    """Median of each cold-start part, stacked, one bar per artifact."""
    title = f"{target['name']}: cold start, fresh process to first result (medians)"
    measured = [r for r in _results(target) if r.get("cold")]
    parts = [p for p in COLD_PARTS_ANY_SCHEMA if any(_cold_median(r, p) is not None for r in measured)]
    if not measured or not parts:
        return Plot(title, note="No cold-start measurements on this target.")
    fig = _figure(len(measured))
    ax = fig.add_subplot()
    positions = list(range(len(measured), 0, -1))
    left = [0.0] * len(measured)
    for part in parts:
        widths = [_cold_median(r, part) or 0.0 for r in measured]
        ax.barh(positions, widths, left=left, height=0.6, label=part.removesuffix("_ms").replace("_", " "))
        left = [a + b for a, b in zip(left, widths)]
    for y, total in zip(positions, left):
        ax.annotate(f"{total:.0f} ms", (total, y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.margins(x=0.1)  # room for the totals
    ax.set_xlim(left=0)
    ax.set_yticks(positions, [r["artifact"] for r in measured])
    ax.set_xlabel("ms")
    fig.legend(loc="outside lower center", fontsize="small", ncols=len(parts), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("cold", target["name"])))


# ---------------------------------------------------------------- (c) quality vs latency


def run_metric(results: dict) -> str:
    """The run's quality metric (results["reference"]["quality"]), else the first result's;
    top-1 for a file from before quality metrics."""
    metric = ((results.get("reference") or {}).get("quality") or {}).get("metric")
    for target in results.get("targets") or []:
        for r in target.get("results") or []:
            metric = metric or (r.get("quality") or {}).get("metric")
    return metric or "top1"


def quality_value(r: dict, metric: str) -> float | None:
    q = r.get("quality")
    if q and q.get("metric") == metric:
        return q.get("value")
    return (r.get("accuracy") or {}).get("top1") if metric == "top1" else None


def accuracy_vs_latency(results: dict) -> Plot:
    """The run's quality metric (top-1, cosine, recall@10 or the user's) against p90, one
    labelled point per artifact; a marker and colour per target."""
    metric = run_metric(results)
    label = metric_label(metric)
    title = ("Accuracy" if metric == "top1" else f"Quality ({label})") + " against p90 latency (every artifact, every target)"
    scale = 100.0 if metric == "top1" else 1.0
    series = []
    for target in results.get("targets") or []:
        points = [(r["artifact"], p90_of(r), quality_value(r, metric)) for r in _results(target)]
        points = [(name, x, y * scale) for name, x, y in points if x is not None and y is not None]
        if points:
            series.append((target["name"], points))
    if not series:
        what = "an accuracy" if metric == "top1" else f"a {label} value"
        return Plot(title, note=f"No artifact has both {what} and a warm latency.")
    n = sum(len(points) for _, points in series)
    fig = _figure(n, width=9.0, row_height=0.22, min_height=4.2)
    ax = fig.add_subplot()
    labels = []
    for i, (name, points) in enumerate(series):
        _, xs, ys = zip(*points)
        dots = ax.scatter(xs, ys, marker=_MARKERS[i % len(_MARKERS)], s=40, label=name, zorder=3)
        colour = dots.get_facecolor()[0]
        prefix = f"{name} · " if len(series) > 1 else ""
        labels += [(y, x, prefix + label, colour) for label, x, y in points]
    # Variants often share an accuracy to the last digit, so labels next to their points pile up
    # unreadably. A column right of the axes, in the points' top-to-bottom order, with a thin
    # line to each point, stays legible however many there are.
    labels.sort(key=lambda item: (-item[0], item[1]))
    for k, (y, x, text, colour) in enumerate(labels):
        ax.annotate(text, (x, y), xytext=(1.03, 1 - (k + 0.5) / len(labels)), textcoords="axes fraction",
                    va="center", fontsize=7, color=colour, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": colour, "alpha": 0.5})
    ax.margins(x=0.08, y=0.12)
    if _wide([x for _, points in series for _, x, _ in points]):
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)  # latency is never negative; the margin would otherwise suggest it
    ax.set_xlabel("p90 latency, ms (lower is better)")
    ax.set_ylabel("top-1 accuracy, % (higher is better)" if metric == "top1"
                  else f"{label} (higher is better)")
    ax.legend(title="target", fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("accuracy")))


def search_front(results: dict) -> Plot:
    """A search's candidates: quality against p90 per target, the Pareto front joined, the
    chosen candidate ringed, and the target's p90 budget drawn."""
    s = results.get("search") or {}
    rows = [r for r in s.get("table") or [] if r["p90_ms"] is not None and r["quality"] is not None]
    metric = run_metric(results)
    title = "Search: " + ("top-1 accuracy" if metric == "top1" else metric_label(metric)) + " against p90, Pareto front joined"
    if not rows:
        return Plot(title, note="No candidate has both a quality value and a warm latency.")
    scale = 100.0 if metric == "top1" else 1.0
    fig = _figure(len(rows), width=8.0, row_height=0.2, min_height=4.0)
    ax = fig.add_subplot()
    budgets = {t["name"]: (t.get("budgets") or {}).get("p90_ms") for t in results.get("targets") or []}
    for i, target in enumerate(dict.fromkeys(r["target"] for r in rows)):
        mine = [r for r in rows if r["target"] == target]
        passed = [r for r in mine if r["verdict"] == "PASS"]
        failed = [r for r in mine if r["verdict"] != "PASS"]
        marker = _MARKERS[i % len(_MARKERS)]
        colour = f"C{i}"
        if passed:
            ax.scatter([r["p90_ms"] for r in passed], [r["quality"] * scale for r in passed], marker=marker,
                       s=45, zorder=3, color=colour, label=f"{target}: meets every budget")
        if failed:
            ax.scatter([r["p90_ms"] for r in failed], [r["quality"] * scale for r in failed], marker=marker, s=45,
                       zorder=3, facecolors="none", edgecolors=colour, label=f"{target}: misses a budget")
        # The front as attainable: from each front point, that accuracy holds until the next one's p90.
        front = sorted((r["p90_ms"], r["quality"] * scale) for r in mine if r["pareto"])
        ax.step(*zip(*front), where="post", color=colour, alpha=0.6, linewidth=1)
        if budgets.get(target) is not None:
            ax.axvline(budgets[target], color=colour, linestyle="--", linewidth=1,
                       label=f"{target}: p90 budget {budgets[target]:g} ms")
        for r in mine:
            ax.annotate(r["candidate"].removeprefix("student-"), (r["p90_ms"], r["quality"] * scale), fontsize=6,
                        xytext=(4, 3), textcoords="offset points")
    chosen = [r for r in rows if r["candidate"] == s.get("chosen")]
    if chosen:
        ax.scatter([r["p90_ms"] for r in chosen], [r["quality"] * scale for r in chosen], s=180, facecolors="none",
                   edgecolors="black", linewidths=1.5, zorder=4, label="chosen")
    if _wide([r["p90_ms"] for r in rows]):
        ax.set_xscale("log")
    ax.set_xlabel("p90 latency, ms (lower is better)")
    ax.set_ylabel("top-1 accuracy, %" if metric == "top1" else f"{metric_label(metric)} (higher is better)")
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("search")))


# ---------------------------------------------------------------- (d) model cache


def cache_miss_hit(results: dict) -> Plot:
    """Cold start with the runtime's model cache empty (miss) and filled (hit), per artifact."""
    title = "Cold start with the runtime's model cache: miss vs hit (medians)"
    rows = []
    for target in results.get("targets") or []:
        for r in _results(target):
            miss, hit = cache_medians((r.get("cold") or {}).get("cache"))
            if miss is not None and hit is not None:
                rows.append((f"{target['name']} · {r['artifact']}", miss, hit))
    if not rows:
        return Plot(title, note="No model-cache measurements in this file.")
    fig = _figure(len(rows) * 1.6)
    ax = fig.add_subplot()
    positions = list(range(len(rows), 0, -1))
    ax.barh([p + 0.18 for p in positions], [m for _, m, _ in rows], height=0.36, label="miss (cache empty)")
    ax.barh([p - 0.18 for p in positions], [h for _, _, h in rows], height=0.36, label="hit (cache filled)")
    ax.set_yticks(positions, [label for label, _, _ in rows])
    ax.set_xlabel("cold start total, ms")
    fig.legend(loc="outside lower center", fontsize="small", ncols=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("cache")))


# ---------------------------------------------------------------- (e) sweep


def _throughput_points(r: dict) -> list[tuple[int, int, float]]:
    """(threads, batch, samples/s) of every measured sweep point, plus the main warm loop: the
    sweep leaves out the target's own setting (its threads, batch 1) because that is the main
    measurement, so without it each line would miss its starting point."""
    points = [(p["threads"], p["batch_size"], p["samples_per_s"]) for p in r.get("sweep") or []
              if p.get("status") == "ok" and p.get("samples_per_s") is not None]
    main = ((r.get("warm") or {}).get("summary") or {}).get("throughput_per_s")
    if points and main is not None:
        points.append((r.get("threads", 1), r.get("batch_size", 1), main * r.get("batch_size", 1)))
    return sorted(set(points))


def sweep_throughput(target: dict) -> Plot:
    """Samples per second against threads, one line per artifact and batch size (against batch
    size when the sweep varied only that)."""
    title = f"{target['name']}: throughput sweep"
    measured = [(r["artifact"], pts) for r in _results(target) if (pts := _throughput_points(r))]
    if not measured:
        return Plot(title, note="No sweep on this target (or no sweep point ran).")
    by_threads = len({t for _, pts in measured for t, _, _ in pts}) > 1
    fig = _figure(0, min_height=3.6)
    ax = fig.add_subplot()
    for i, (artifact, pts) in enumerate(measured):
        groups: dict[int, list[tuple[int, float]]] = {}
        for threads, batch, per_s in pts:
            key, x = (batch, threads) if by_threads else (threads, batch)
            groups.setdefault(key, []).append((x, per_s))
        for key, line in groups.items():
            xs, ys = zip(*sorted(line))
            label = f"{artifact}, batch {key}" if by_threads else f"{artifact}, {key} thread(s)"
            ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], label=label)
    ax.set_xlabel("threads" if by_threads else "batch size")
    ax.set_ylabel("samples per second")
    xs_all = sorted({t if by_threads else b for _, pts in measured for t, b, _ in pts})
    ax.set_xticks(xs_all)
    if _wide([float(x) for x in xs_all]):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return Plot(title, _to_svg(fig, _salt("sweep", target["name"])))


def target_plots(target: dict) -> list[Plot]:
    return [warm_latency(target), cold_start_parts(target), sweep_throughput(target)]


def overall_plots(results: dict) -> list[Plot]:
    return [accuracy_vs_latency(results), cache_miss_hit(results)]
