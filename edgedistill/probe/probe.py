"""One measurement in a fresh process: import the runtime, read and compile the model, first
inference, warm loop, integrity checks, outputs. Run as `python probe.py request.json`; writes
`result_path` from the request.

Only the standard library at the top: numpy and the runtime are imported inside the timed
section, because they are part of a real cold start. This file and runtimes.py beside it are all
a remote device needs (they are copied there as they are); they never import edgedistill.

Modes: "describe" (import and load only: the model's inputs and outputs, nothing run), "cold"
(cold start only), "outputs" (cold start + every held-out output, for verification), "full"
(cold start, outputs, warm loop, integrity checks), "warm" (load, then the warm loop at
`batch_size`: a sweep point).

Inputs: `inputs` is an .npz with one array per model input, keyed by the input's name, samples
along axis 0 (batch b of sample k is arr[k:k+b] for every input alike); a .npy is a one-input
model's only input. A .pte keeps no names: its inputs are input_0, input_1, ..., fed the
file's arrays in the file's order when the file names them otherwise (the pipeline writes them
in the order of the model's forward parameters, the order torch.export gives them). The probe
runs every call with a dict {input name: array}; outputs are the model's FIRST output.
`shapes` ({input name: [int, ...]}) fixes dynamic dimensions (OpenVINO reshapes to them).
"""

import time

_START_WALL_NS = time.time_ns()  # first thing: interpreter start ends here

import json
import os
import statistics
import sys

PROBE_SCHEMA = "edgedistill.probe/2"
OUTPUT_SAMPLE_STRIDE = 37  # a prime, so sampled iterations land on varied inputs
MAX_OUTPUT_SAMPLES = 64
PARTIAL_EVERY_S = 1.0  # how often the warm loop saves what it measured (see _Partial)
SAME_INPUT_BLOCK = 10  # iterations per block of the caching check (repeated, varied, repeated...)


class UnsupportedBatch(ValueError):
    """The model's batch dimension is fixed to another size than the sweep point asks for."""


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


class _Partial:
    """What this probe has measured so far, for a parent that has to kill it.

    A probe that hangs is killed by the parent's timeout and never writes its result; the
    parent then reads these files, so the cold start and the warm samples measured before the
    hang are kept (and labelled partial) instead of lost:
      `<result_path>.partial`          the result so far (cold start, session), rewritten atomically
      `<result_path>.partial.warm_ns`  every warm sample so far, appended as native int64 ns
    Appending keeps a save O(new samples): rewriting 100k samples as JSON each second took
    ~0.7 s, a stall inside the timed loop. A record torn by the kill is a short tail the reader
    drops (fixed-size records), so the reader never sees a wrong sample.
    """

    def __init__(self, result_path, result):
        self.path = result_path + ".partial" if result_path else None
        self.result = result
        self.saved = 0

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(self.result, ok=False, partial=True), f)
        os.replace(tmp, self.path)

    def warm_saver(self):
        """A callback for _timed_loop: appends the warm samples timed since the last call."""
        if not self.path:
            return None
        import array

        def save(times, elapsed):
            new = times[self.saved:]
            with open(self.path + ".warm_ns", "ab") as f:
                f.write(array.array("q", new).tobytes())
            self.saved += len(new)
        return save


def _timed_loop(run, samples, min_n, min_s, max_s, keep_every=0, on_progress=None):
    """Time single calls of run(sample) until both the minimum count and duration are met.

    Returns (times_ns, elapsed_s, kept) where kept holds (sample index, output) of every
    `keep_every`-th iteration, recorded after the clock stopped. `on_progress(times, elapsed_s)`
    is called about every PARTIAL_EVERY_S, outside the timed region.
    """
    clock = time.perf_counter_ns
    times, kept = [], []
    began = clock()
    every_ns = int(PARTIAL_EVERY_S * 1e9)
    next_save = began + every_ns
    i = 0
    while True:
        k = i % len(samples)
        x = samples[k]
        t0 = clock()
        out = run(x)
        t1 = clock()
        times.append(t1 - t0)
        if keep_every and i % keep_every == 0 and len(kept) < MAX_OUTPUT_SAMPLES:
            kept.append((k, out))
        i += 1
        elapsed = (t1 - began) / 1e9
        if (i >= min_n and elapsed >= min_s) or elapsed >= max_s:
            return times, elapsed, kept
        if on_progress is not None and t1 >= next_save:
            on_progress(times, elapsed)
            next_save = clock() + every_ns  # the save's own time does not count towards the next


def _overhead_ms(fn, samples, n):
    """Median cost per iteration of the timing loop around `fn` (no inference), in ms."""
    clock = time.perf_counter_ns
    costs = []
    for j in range(n):
        t0 = clock()
        fn(samples[j % len(samples)])
        t1 = clock()
        costs.append(t1 - t0)
    return round(statistics.median(costs) / 1e6, 6) if costs else 0.0


def _warm(session, samples, req, keep_every=0, on_progress=None):
    """Warm-up, then the timed loop; also the loop's own overhead and the harness's (the
    Session's input check included), each measured the same way without the inference."""
    for i in range(req["warmup_iterations"]):
        session.run(samples[i % len(samples)])
    min_n, min_s, max_s = req["min_iterations"], req["min_duration_s"], req["max_duration_s"]
    times, elapsed, kept = _timed_loop(session.run, samples, min_n, min_s, max_s, keep_every, on_progress)
    n = len(times)
    overhead_n = min(n, 1000)
    warm = {
        "samples_ms": [round(t / 1e6, 5) for t in times],
        "duration_s": round(elapsed, 4),
        "hit_max_duration": elapsed >= max_s and (n < min_n or elapsed < min_s),
        "loop_overhead_ms": _overhead_ms(lambda x: None, samples, overhead_n),
        "harness_overhead_ms": _overhead_ms(session._check_input, samples, overhead_n),
    }
    return warm, kept


def _same_input(session, samples, req):
    """One input repeated, in blocks alternating with blocks of varied inputs, so both are timed
    under the same machine state (clocks, caches, scheduler drift over a run): a repeated input
    much faster than the varied ones beside it means a cache answered. Returns (repeated, varied)."""
    n = max(50, req["min_iterations"] // 2)
    clock = time.perf_counter_ns
    others = samples[1:] or samples
    same, varied = [], []
    began, j = clock(), 0
    while len(same) < n and (clock() - began) / 1e9 < req["max_duration_s"]:
        for _ in range(SAME_INPUT_BLOCK):
            t0 = clock()
            session.run(samples[0])
            same.append(clock() - t0)
        for _ in range(SAME_INPUT_BLOCK):
            x = others[j % len(others)]
            j += 1
            t0 = clock()
            session.run(x)
            varied.append(clock() - t0)
    return [round(t / 1e6, 5) for t in same], [round(t / 1e6, 5) for t in varied]


def _compare_sampled(kept, outputs):
    import numpy as np

    if not kept:
        return None
    diffs, mismatches = [], 0
    for k, out in kept:
        ref = outputs[k : k + 1]
        out = np.asarray(out)
        diffs.append(float(np.abs(out.astype(np.float64) - ref).max()) if out.size else 0.0)
        # Every position's top answer (one for a classifier's logits, one per token for a text
        # model's), so an output of any rank is compared alike.
        mismatches += int(not np.array_equal(out.argmax(axis=-1), ref.argmax(axis=-1))) if out.ndim else 0
    return {"checked": len(kept), "argmax_mismatches": mismatches, "max_abs_diff": max(diffs)}


def _read_inputs(path, model_inputs):
    """{model input name: array (N, ...)} from the inputs file, checked for names and counts.

    One array for a one-input model is that input whatever its key (a .npy has none; the
    pipeline's files say "x"). The harness checks shapes and dtypes with a table before any
    probe runs; this is the probe's own last line, for a request made some other way.
    """
    import numpy as np

    names = [spec["name"] for spec in model_inputs]
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):  # a .npy: one unnamed array
        arrays = {"x": loaded}
    else:
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    elif (len(arrays) == len(names) and names == ["input_%d" % i for i in range(len(names))]
          and not any(n in arrays for n in names)):  # a .pte's unnamed inputs, by position
        arrays = dict(zip(names, arrays.values()))
    missing = [n for n in names if n not in arrays]
    unexpected = [k for k in arrays if k not in names]
    if missing or unexpected:
        raise ValueError(f"inputs file {path}: the model's inputs are {names}; "
                         f"missing {missing}, unexpected {unexpected}")
    counts = {n: (len(a) if a.ndim else None) for n, a in arrays.items()}
    if len(set(counts.values())) != 1 or None in counts.values():
        raise ValueError(f"inputs file {path}: every input needs the same number of samples "
                         f"along axis 0; found {counts}")
    return {n: arrays[n] for n in names}  # in the model's order


def _count(inputs):
    return len(next(iter(inputs.values())))


def _slice(inputs, k, batch):
    """Batch `batch` of sample k, every input sliced alike."""
    return {name: arr[k : k + batch] for name, arr in inputs.items()}


def _all_outputs(session, inputs):
    import numpy as np

    outs = [np.asarray(session.run(_slice(inputs, k, 1))) for k in range(_count(inputs))]
    return np.concatenate(outs, axis=0)


def _batches(inputs, batch):
    return [_slice(inputs, k, batch) for k in range(0, _count(inputs) - batch + 1, batch)]


def _check_batch(session, batch):
    """Every input's first dimension must be dynamic or equal to the batch asked for."""
    for spec in session.inputs:
        declared = spec["shape"][0] if spec["shape"] else None
        if declared is not None and declared != batch:
            raise UnsupportedBatch(f"the model's batch dimension is fixed at {declared} "
                                   f"(input {spec['name']!r}); batch {batch} needs a dynamic batch axis")


def run(req: dict) -> dict:
    result = {"schema": PROBE_SCHEMA, "backend": req["backend"], "mode": req["mode"], "pid": os.getpid()}
    # On a device, a launcher there says when it started us (its clock, not the host's).
    parent_ns = req.get("parent_start_wall_ns") or int(os.environ.get("EDGEDISTILL_PARENT_START_WALL_NS") or 0)
    interpreter_ms = round((_START_WALL_NS - parent_ns) / 1e6, 4) if parent_ns else None

    t0 = time.perf_counter()
    import numpy as np

    runtimes = _import_runtimes()
    runtimes.import_runtime(req["backend"])
    t1 = time.perf_counter()
    session = runtimes.load(req["backend"], req["model"], threads=req["threads"], device=req["device"],
                            options=req.get("options") or {}, cache=req.get("cache"),
                            precision=req.get("precision"), shapes=req.get("shapes"))
    t2 = time.perf_counter()
    # The session times reading the model file itself; the rest of loading is compiling or
    # creating the session, so the parts add up exactly to the load.
    read_ms = min(session.load_parts.get("read_ms", 0.0), _ms(t1, t2))
    result["cold"] = {
        "interpreter_ms": interpreter_ms,
        "import_ms": _ms(t0, t1),
        "read_ms": read_ms,
        "compile_ms": round(_ms(t1, t2) - read_ms, 4),
    }
    result["runtime_version"] = runtimes.runtime_version(req["backend"])
    result["inputs"] = session.inputs
    result["outputs"] = session.outputs
    if req["mode"] == "describe":  # what the model takes and gives; nothing is run
        result["session"] = session.describe()
        result["peak_rss_mb"] = round(_status_mb("VmHWM"), 2)
        return result
    inputs = _read_inputs(req["inputs"], session.inputs)
    batch = int(req.get("batch_size") or 1)
    _check_batch(session, batch)
    t3 = time.perf_counter()
    first = session.run(_slice(inputs, 0, batch))
    t4 = time.perf_counter()
    result["cold"]["first_inference_ms"] = _ms(t3, t4)
    result["cold"]["rss_after_load_mb"] = round(_status_mb("VmRSS"), 2)
    result["session"] = session.describe()
    result["first_output_shape"] = list(np.asarray(first).shape)
    partial = _Partial(req.get("result_path"), result)
    partial.save()  # the cold start is measured: kept even if what follows hangs

    outputs = None
    if req["mode"] in ("full", "outputs"):
        outputs = _all_outputs(session, inputs)
        np.save(req["outputs_path"], outputs)
        result["outputs_path"] = req["outputs_path"]
    if req["mode"] == "full":
        samples = _batches(inputs, 1)
        warm, kept = _warm(session, samples, req, keep_every=OUTPUT_SAMPLE_STRIDE, on_progress=partial.warm_saver())
        warm["same_input_samples_ms"], warm["same_input_varied_ms"] = _same_input(session, samples, req)
        result["warm"] = warm
        result["sampled_outputs"] = _compare_sampled(kept, outputs)
    elif req["mode"] == "warm":
        samples = _batches(inputs, batch)
        result["warm"], _ = _warm(session, samples, req, on_progress=partial.warm_saver())
        if req.get("same_input"):  # the student's other fresh processes check for caching too
            warm = result["warm"]
            warm["same_input_samples_ms"], warm["same_input_varied_ms"] = _same_input(session, samples, req)
    result["batch_size"] = batch
    result["peak_rss_mb"] = round(_status_mb("VmHWM"), 2)
    return result


def main(argv):
    with open(argv[1]) as f:
        req = json.load(f)
    try:
        result = run(req)
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 -- reported to the parent as data, with type and message
        result = {"schema": PROBE_SCHEMA, "ok": False, "error_type": type(e).__name__, "error": str(e)}
    tmp = req["result_path"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, req["result_path"])  # the parent sees a whole result or none
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
