"""A fake runtime for harness tests, copied beside probe.py in place of runtimes.py.

Deterministic latencies, and injected hangs, crashes and grandchildren, chosen by `options`.
"""

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
    input_name, input_shape, input_dtype = "input", [None, 4], "float32"

    def __init__(self, options):
        self.options = options

    def run(self, x):
        import numpy as np

        time.sleep(self.options.get("latency_ms", 1.0) / 1000)
        return np.asarray(x, dtype="float32").reshape(len(x), -1)[:, :3]

    def describe(self):
        return {"device": self.options.get("device_used", "CPU"), "threads": 1}


def load(backend, path, *, threads, device="CPU", options=None):
    options = options or {}
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
    return Session(options)
