"""One measurement in a fresh process: import the runtime, load the model, first inference,
warm loop, outputs. Run as `python probe.py request.json`; writes `result_path` from the request.

Only the standard library at the top: numpy and the runtime are imported inside the timed
section, because they are part of a real cold start. This file and runtimes.py beside it are all
a remote device needs (they are copied there as they are); they never import edgedistill.
"""

import time

_START_WALL_NS = time.time_ns()  # first thing: interpreter start ends here

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

PROBE_SCHEMA = "edgedistill.probe/1"


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 4)


def _status_mb(field: str) -> float:
    """A memory figure from /proc/self/status (Linux, Android), in MiB; NaN where unreadable.

    VmHWM is the peak resident size of this process image. getrusage's ru_maxrss is not used:
    Linux carries it across exec, so a probe spawned by a large parent would report the parent's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def _import_runtimes():
    try:
        from . import runtimes  # imported as a package (tests)
    except ImportError:
        import runtimes  # run as a script: runtimes.py lies beside this file
    return runtimes


def _warm_loop(session, samples, req):
    """Time single inferences until both the minimum count and the minimum duration are met.

    Inputs cycle through varied samples, so a runtime cannot serve a cached answer.
    """
    import numpy as np

    for i in range(req["warmup_iterations"]):
        session.run(samples[i % len(samples)])
    min_n, min_s, max_s = req["min_iterations"], req["min_duration_s"], req["max_duration_s"]
    clock = time.perf_counter_ns
    times = []
    began = clock()
    i = 0
    while True:
        x = samples[i % len(samples)]
        t0 = clock()
        session.run(x)
        t1 = clock()
        times.append(t1 - t0)
        i += 1
        elapsed = (t1 - began) / 1e9
        if (i >= min_n and elapsed >= min_s) or elapsed >= max_s:
            break
    # The loop's own cost per iteration (clock reads, indexing, append) measured the same way.
    overhead = []
    for j in range(min(len(times), 1000)):
        t0 = clock()
        _ = samples[j % len(samples)]
        t1 = clock()
        overhead.append(t1 - t0)
    return {
        "samples_ms": [round(t / 1e6, 5) for t in times],
        "duration_s": round((clock() - began) / 1e9, 4),
        "loop_overhead_ms": round(float(np.median(overhead)) / 1e6, 6) if overhead else 0.0,
        "hit_max_duration": elapsed >= max_s and (i < min_n or elapsed < min_s),
    }


def _all_outputs(session, inputs):
    import numpy as np

    outs = [np.asarray(session.run(inputs[k : k + 1])) for k in range(len(inputs))]
    return np.concatenate(outs, axis=0)


def run(req: dict) -> dict:
    result = {"schema": PROBE_SCHEMA, "backend": req["backend"], "mode": req["mode"], "pid": os.getpid()}
    parent_ns = req.get("parent_start_wall_ns")
    result["interpreter_ms"] = round((_START_WALL_NS - parent_ns) / 1e6, 4) if parent_ns else None

    t0 = time.perf_counter()
    import numpy as np

    runtimes = _import_runtimes()
    runtimes.import_runtime(req["backend"])
    t1 = time.perf_counter()
    session = runtimes.load(req["backend"], req["model"], threads=req["threads"], device=req["device"],
                            options=req.get("options") or {})
    t2 = time.perf_counter()
    inputs = np.load(req["inputs"], mmap_mode=None)
    t3 = time.perf_counter()
    first = session.run(inputs[:1])
    t4 = time.perf_counter()
    result["cold"] = {
        "interpreter_ms": result.pop("interpreter_ms"),
        "import_ms": _ms(t0, t1),
        "load_ms": _ms(t1, t2),
        "first_inference_ms": _ms(t3, t4),
        "rss_after_load_mb": round(_status_mb("VmRSS"), 2),
    }
    result["runtime_version"] = runtimes.runtime_version(req["backend"])
    result["session"] = session.describe()
    result["first_output_shape"] = list(np.asarray(first).shape)

    if req["mode"] in ("full", "outputs"):
        outputs = _all_outputs(session, inputs)
        np.save(req["outputs_path"], outputs)
        result["outputs_path"] = req["outputs_path"]
    if req["mode"] == "full":
        samples = [inputs[k : k + 1] for k in range(len(inputs))]
        result["warm"] = _warm_loop(session, samples, req)
    result["peak_rss_mb"] = round(_status_mb("VmHWM"), 2)
    return result


def main(argv):
    with open(argv[1]) as f:
        req = json.load(f)
    try:
        result = run(req)
        result["ok"] = True
    except Exception as e:  # reported to the parent as data, with the type and message
        result = {"schema": PROBE_SCHEMA, "ok": False, "error_type": type(e).__name__, "error": str(e)}
    tmp = req["result_path"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, req["result_path"])  # the parent sees a whole result or none
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
