"""RELIABILITY 29, small: benchmarks/gate_stability.py's logic on the fake runtime, really measured
by the unchanged harness in fresh probe processes (fast; the script itself measures the real
runtimes, which takes minutes)."""

import importlib.util

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def gs():
    spec = importlib.util.spec_from_file_location("gate_stability", ROOT / "benchmarks" / "gate_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reliability_29_self_gates_pass_a_slower_head_fails_a_caching_runtime_is_caught(gs, tmp_path):
    """RELIABILITY 29: unchanged measurements of an honest runtime PASS against each other with no
    integrity flag; a really slower one (2 ms a call against 1 ms) FAILs; the caching one is
    caught (INVALID, caching_suspected) while the honest one beside it is not flagged."""
    benches = [gs.fake_bench(tmp_path, {"latency_ms": 1.0}) for _ in range(3)]
    for b in benches:
        assert gs.flags(b) == [] and b["verdict"] == "PASS"
    for i in (1, 2):
        verdict, metrics = gs.gate(benches[i], benches[i - 1], tmp_path / "gates")
        assert verdict == "PASS", metrics
        (warm,) = [m for m in metrics if m["metric"] == "warm_p50"]
        assert warm["base_n"] == warm["head_n"] == 5 and not warm["regression"]
    slow = gs.fake_bench(tmp_path, {"latency_ms": 2.0})
    verdict, metrics = gs.gate(slow, benches[-1], tmp_path / "gates")
    assert verdict == "FAIL" and any(m["regression"] and m["delta_pct"] > 50 for m in metrics)
    caught, false_flags, lines = gs.caching_rounds(tmp_path, 1)
    assert (caught, false_flags) == (1, 0), lines
    # The detection floor over these measured pairs: at least the 10 % floor, and a 2x slowdown is seen.
    floor = gs.detection_floor([(benches[0], benches[1]), (benches[1], benches[2])], 10.0, 0.01)
    assert floor is not None and 10 <= floor < 100
