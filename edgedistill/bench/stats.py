"""Pure statistics over raw samples (milliseconds). No I/O, no runtime imports."""

from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50, 90, 95, 99)
EARLY_STOPPING_CONFIDENCE = 0.99  # MLPerf LoadGen's


def min_samples_for(percentile: float) -> int:
    """Fewest samples for which the percentile is not simply the maximum.

    With n samples the p-th percentile is estimated from the top (1 - p/100)·n samples;
    below 1 / (1 - p/100) there is no tail left to estimate it from.
    """
    tail = 1.0 - percentile / 100.0
    return math.ceil(round(1.0 / tail, 9)) if tail > 0 else math.inf


def summarize(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    out = {"n": int(a.size)}
    for p in PERCENTILES:
        out[f"p{p}_ms"] = float(np.percentile(a, p))
    q1, q3 = np.percentile(a, [25, 75])
    fence = q3 + 1.5 * (q3 - q1)
    out.update(
        mean_ms=float(a.mean()),
        std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min_ms=float(a.min()),
        max_ms=float(a.max()),
        throughput_per_s=float(1000.0 / a.mean()) if a.mean() > 0 else float("nan"),
        outliers_high=int((a > fence).sum()),  # Tukey's fence: counted, not removed
        p90_early_stopping_ms=early_stopping_percentile(a, 90),
    )
    return out


def early_stopping_index(n: int, percentile: float, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int | None:
    """1-based rank k of the order statistic that bounds the true percentile from above with
    `confidence`, as MLPerf LoadGen's early stopping does; None if n samples cannot.

    The k-th smallest of n samples exceeds the true p-quantile when fewer than k samples fall
    below it: P = BinomCDF(k - 1; n, p). The smallest k with P >= confidence is the bound.
    """
    from scipy.stats import binom

    if n <= 0:
        return None
    k = int(binom.ppf(confidence, n, percentile / 100.0)) + 1
    # ppf can land one short of the exact cdf threshold through rounding; step up if so.
    while k <= n and binom.cdf(k - 1, n, percentile / 100.0) < confidence:
        k += 1
    return k if k <= n else None


def early_stopping_percentile(samples, percentile: float,
                              confidence: float = EARLY_STOPPING_CONFIDENCE) -> float | None:
    """A latency the true percentile stays under with `confidence` (None: too few samples)."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    k = early_stopping_index(a.size, percentile, confidence)
    return None if k is None else float(a[k - 1])


def median_and_spread(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def spread_pct(values: list[float]) -> float | None:
    """How far apart the runs of one artifact landed: (max - min) / median, in percent.

    Over per-run medians of fresh processes, this is the noise a comparison of two benches has
    to stand out from; None with fewer than two runs (no spread to see) or a median not above 0."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size < 2 or np.median(a) <= 0:
        return None
    return float(100.0 * (a.max() - a.min()) / np.median(a))
