"""A fake runtime for harness tests, copied beside probe.py in place of runtimes.py.

Deterministic latencies, and injected hangs, crashes, grandchildren, caching and drifting
outputs, chosen by `options` (the request's, else JSON in $EDGEDISTILL_FAKE_OPTIONS, which the
probe inherits, so a test or script can drive the unchanged harness and CLI:
benchmarks/gate_stability.py, tests/test_interrupts.py).
"""

import json
import os
import signal
import subprocess
import time

RUNTIME_MODULE = {"fake": "json"}


def import_runtime(backend):
    import json

    return json


def runtime_version(backend):
    return "0-fake"


class Session:
    """One input named "input" (N, 4) float32; the first output is x[:, :3]."""

    def __init__(self, options, cache):
        self.options = options
        self.inputs = [{"name": "input", "shape": [options.get("fixed_batch"), 4], "dtype": "float32"}]
        self.outputs = [{"name": "output", "shape": [options.get("fixed_batch"), 3], "dtype": "float32"}]
        self.load_parts = {"read_ms": 0.5}
        self.calls = 0
        self.last = None
        self.cache = cache

    def _check_input(self, feeds):
        if list(feeds) != ["input"] or feeds["input"].shape[1:] != (4,):
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise ValueError(f"expected input 'input' of shape [?, 4], got {shapes}")

    def run(self, feeds):
        import numpy as np

        self._check_input(feeds)
        x = feeds["input"]
        self.calls += 1
        if self.options.get("hang_after") and self.calls > self.options["hang_after"]:
            time.sleep(3600)  # a runtime that stops answering in the middle of the warm loop
        same = self.last is not None and np.array_equal(x, self.last)
        self.last = x.copy()
        cached = self.options.get("cache_repeats") and same
        time.sleep(self.options.get("latency_ms", 1.0) / 1000 / (10 if cached else 1))
        out = np.asarray(x, dtype="float32").reshape(len(x), -1)[:, :3].copy()
        if self.options.get("drift_after") and self.calls > self.options["drift_after"]:
            out[:, 0] = -out[:, 0] - 1000  # a different answer than the accuracy pass got
        return out

    def describe(self):
        return {"device": self.options.get("device_used", "CPU"), "threads": 1, "cache": self.cache}


def load(backend, path, *, threads, device="CPU", options=None, cache=None, precision=None, shapes=None):
    options = options or json.loads(os.environ.get("EDGEDISTILL_FAKE_OPTIONS") or "{}")
    fault = options.get("fault")
    if fault == "hang":
        time.sleep(3600)
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "grandchild":
        # keeps the probe's stderr open long after the probe itself would have been killed
        subprocess.Popen(["sleep", "3600"])
        time.sleep(3600)
    if fault == "raise":
        raise ValueError("input 'input': expected shape [1, 4], found [1, 5]")
    time.sleep(options.get("load_ms", 2.0) / 1000)
    if cache:
        marker = os.path.join(cache["dir"], "compiled")
        hit = os.path.exists(marker)
        time.sleep(0.005 if hit else 0.1)  # a hit skips the 100 ms "compile" (well above process-start noise)
        open(marker, "w").close()
    return Session(options, cache)
