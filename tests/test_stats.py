import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.bench import stats


def test_summary_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.lognormal(0, 0.3, 1000)
    s = stats.summarize(a.tolist())
    assert s["n"] == 1000
    assert s["p90_ms"] == np.percentile(a, 90)
    assert abs(s["mean_ms"] - a.mean()) < 1e-12
    assert abs(s["throughput_per_s"] - 1000 / a.mean()) < 1e-9


def test_outliers_counted_not_removed():
    a = [1.0] * 99 + [50.0]
    s = stats.summarize(a)
    assert s["outliers_high"] == 1 and s["max_ms"] == 50.0 and s["n"] == 100


def test_min_samples_for_percentile():
    assert stats.min_samples_for(50) == 2
    assert stats.min_samples_for(90) == 10
    assert stats.min_samples_for(99) == 100


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1e4, allow_nan=False), min_size=2, max_size=300))
def test_percentiles_are_ordered(samples):
    s = stats.summarize(samples)
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["std_ms"] >= 0


def test_median_and_spread_skips_missing():
    assert stats.median_and_spread([3.0, None, 1.0, 2.0]) == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0}
    assert stats.median_and_spread([None]) == {"n": 0}


def test_early_stopping_needs_44_samples_for_p90_at_99_percent():
    # 0.9**44 < 0.01 <= 0.9**43: below 44 samples even the maximum is not a 99 % bound
    assert stats.early_stopping_index(43, 90) is None
    assert stats.early_stopping_index(44, 90) == 44
    assert stats.early_stopping_percentile(list(range(1, 44)), 90) is None
    assert stats.summarize([1.0] * 20)["p90_early_stopping_ms"] is None


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=44, max_value=20000))
def test_early_stopping_rank_is_the_least_with_enough_confidence(n):
    from scipy.stats import binom

    k = stats.early_stopping_index(n, 90)
    assert binom.cdf(k - 1, n, 0.9) >= 0.99
    assert k == 1 or binom.cdf(k - 2, n, 0.9) < 0.99
    assert k >= 0.9 * n  # never below the point estimate's rank


def test_early_stopping_bound_covers_the_true_p90_at_least_99_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_p90 = float(np.exp(0.5 * 1.2815515655446004))  # lognormal(0, 0.5)
    runs = 2000
    covered = sum(stats.early_stopping_percentile(rng.lognormal(0, 0.5, 300), 90) >= true_p90
                  for _ in range(runs))
    assert covered / runs >= 0.985  # 99 % nominal, minus simulation noise


def test_run_spread_is_range_over_median_in_percent():
    assert stats.spread_pct([1.0, 1.1, 0.9, 1.0, 1.05]) == pytest.approx(20.0)
    assert stats.spread_pct([2.0]) is None  # one run: no spread to see
    assert stats.spread_pct([]) is None
    assert stats.spread_pct([0.0, 0.0]) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e4), min_size=2, max_size=20), st.floats(1e-3, 1e3))
def test_run_spread_ignores_units_and_order(values, factor):
    a = stats.spread_pct(values)
    assert a >= 0
    assert stats.spread_pct([v * factor for v in reversed(values)]) == pytest.approx(a, rel=1e-9, abs=1e-9)
