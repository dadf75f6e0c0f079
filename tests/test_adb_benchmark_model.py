"""LiteRT's benchmark_model on a phone: its log parsed (recorded and source-reconstructed output),
and the adb runner driving it through the fake adb of tests/fake_adb.py.

The recorded output (tests/fixtures/benchmark_model/README.md) is the ai-edge-litert wheel's
`litert-benchmark` on the built-in student; the C++ tool's (Android) format is reconstructed from
its source, not recorded: no phone and no Android build of it exist here. Through the fake adb the
"phone" runs a stand-in under the binary's name: a script that takes the Android tool's flags and
runs the wheel's real tool on the pushed model (real measurements), or one that replays the
reconstructed Android output (the other format, end to end).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_adb
from edgedistill.artifacts import Artifact
from edgedistill.backends.base import BACKENDS
from edgedistill.bench import benchmark_model as bm
from edgedistill.bench.harness import EvalSet, bench_artifact
from edgedistill.bench.runners import open_runner
from edgedistill.config import TargetConfig
from edgedistill.errors import UsageError
from edgedistill.gate import check_result
from edgedistill.report.schema import Result

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmark_model"
SERIAL = "FA6X01234"
FAST = {"warmup_iterations": 3, "min_iterations": 20, "min_duration_s": 0.05, "max_duration_s": 5.0,
        "cold_runs": 2, "timeout_s": 60.0, "measure_cache": False, "max_load_per_core": 10.0}
# The backends a LiteRT phone target lists once the litert backend is registered (it is another
# helper's work): until then none, which the runner accepts with benchmark_model set.
LITERT_BACKENDS = ["litert"] if "litert" in BACKENDS else []
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


def _read(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode(errors="replace")


def _wheel_ok() -> str:
    return _read("litert-benchmark-ok.stdout") + _read("litert-benchmark-ok.stderr")


def _android() -> str:
    return _read("android-benchmark_model-reconstructed.txt")


# ---------------------------------------------------------------- the parser


def test_recorded_wheel_output_parses_every_field():
    """Each value the recorded run printed lands in its field, in ms (the file says what it printed)."""
    text = _wheel_ok()
    printed = dict(re.findall(r"^([A-Za-z ()0-9]+):\s+([\d.]+) ms", _read("litert-benchmark-ok.stdout"), re.M))
    got = bm.parse(text)
    assert got["format"] == bm.WHEEL_FORMAT
    assert got["init_ms"] == float(printed["Model initialization"])
    assert got["first_inference_ms"] == float(printed["Warmup (first)"])
    assert got["warmup"] == {"count": 5, "first_ms": float(printed["Warmup (first)"]),
                             "avg_ms": float(printed["Warmup (avg)"])}
    inf = got["inference"]
    assert inf["count"] == 50
    for key, label in [("avg", "avg"), ("min", "min"), ("max", "max"), ("median", "median"), ("std", "std"),
                       ("p5", "p5"), ("p95", "p95")]:
        assert inf[f"{key}_ms"] == float(printed[f"Inference ({label})"]), key
    assert inf["min_ms"] <= inf["p5_ms"] <= inf["median_ms"] <= inf["p95_ms"] <= inf["max_ms"]
    # The wheel's tool reports no memory; its plugin-load warnings ("Failed to load plugin") are no errors.
    assert got["memory"] == {"init_delta_mb": None, "overall_delta_mb": None, "peak_mb": None}
    assert "Failed to load plugin" in text and got["errors"] == []


def test_reconstructed_android_output_parses_every_field_in_ms():
    got = bm.parse(_android())
    assert got["format"] == bm.ANDROID_FORMAT
    assert got["init_ms"] == 3.412 and got["first_inference_ms"] == 1.731  # "Init: 3412, First inference: 1731" us
    assert got["warmup"]["count"] == 5 and got["warmup"]["avg_ms"] == 0.8234
    assert got["inference"] == {"count": 84, "first_ms": 0.612, "curr_ms": 0.597, "min_ms": 0.585, "max_ms": 0.702,
                                "avg_ms": 0.5987, "std_ms": 0.014, "p5_ms": 0.588, "median_ms": 0.596, "p95_ms": 0.622}
    assert got["inference_avg_ms"] == 0.5987 and got["requested_runs"] == [5, 50]
    assert got["memory"] == {"init_delta_mb": 2.51562, "overall_delta_mb": 3.10938, "peak_mb": 9.33594}
    assert got["model_size_mb"] == 0.529064 and got["errors"] == []


def test_missing_lines_leave_their_fields_empty_and_fall_back_where_the_log_says_it_twice():
    text = _android()
    no_memory = "\n".join(line for line in text.splitlines() if "memory footprint" not in line.lower())
    got = bm.parse(no_memory)
    assert got["memory"] == {"init_delta_mb": None, "overall_delta_mb": None, "peak_mb": None}
    assert got["inference"]["median_ms"] == 0.596
    # Without the closing summary line: init from "Initialized session in", first inference from
    # the warm-up line's first=, the average from the timed runs' avg=.
    no_summary = "\n".join(line for line in text.splitlines() if "Inference timings in us" not in line)
    got = bm.parse(no_summary)
    assert (got["init_ms"], got["first_inference_ms"], got["inference_avg_ms"]) == (3.412, 1.731, 0.5987)
    # An older build's Stat (no percentiles): parsed, and the median stays None (never avg).
    old = re.sub(r" p5=\S+ median=\S+ p95=\S+", "", text)
    got = bm.parse(old)
    assert got["inference"]["median_ms"] is None and got["inference"]["avg_ms"] == 0.5987
    # Every run equally long: "count=N curr=X(all same)" and its percentiles.
    same = text.replace("count=84 first=612 curr=597 min=585 max=702 avg=598.7 std=14 p5=588 median=596 p95=622",
                        "count=84 curr=600(all same) p5=600 median=600 p95=600")
    inf = bm.parse(same)["inference"]
    assert inf["median_ms"] == inf["min_ms"] == inf["max_ms"] == 0.6 and inf["std_ms"] == 0.0


@pytest.mark.parametrize("name, expected", [
    ("android-benchmark_model-failed-reconstructed.txt", "ERROR: Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE'"),
    ("litert-benchmark-missing-model.stderr", "Model file not found: missing.tflite"),
    ("litert-benchmark-bad-model.stderr", "ERROR: Model provided has model identifier"),
])
def test_a_failed_run_is_no_measurement_and_names_the_tools_own_error_line(name, expected):
    text = _read(name)
    with pytest.raises(bm.ToolOutputError) as e:
        bm.parse(text)
    assert expected in str(e.value)
    assert "Benchmarking failed." not in str(e.value)  # the generic closing line comes last, not first


@pytest.mark.parametrize("text", ["", "hello\nworld\n", "count=abc first=1\n",
                                  np.random.default_rng(0).bytes(400).decode(errors="replace")])
def test_garbage_is_no_measurement(text):
    with pytest.raises(bm.ToolOutputError, match="no timings"):
        bm.parse(text)


def test_the_command_uses_benchmark_models_own_flag_names():
    argv = bm.command("/d/benchmark_model", "/d/m.tflite", threads=2, warmup_runs=3, num_runs=20, min_secs=0.05,
                      max_secs=5.0)
    flags = dict(a[2:].split("=", 1) for a in argv[1:])
    # benchmark_model.cc GetFlags / benchmark_tflite_model.cc: the names the binary parses.
    assert flags == {"graph": "/d/m.tflite", "num_threads": "2", "warmup_runs": "3", "warmup_min_secs": "0",
                     "num_runs": "20", "min_secs": "0.05", "max_secs": "5", "enable_op_profiling": "false",
                     "report_peak_memory_footprint": "true"}


def test_warm_and_cold_records_keep_what_was_printed_and_leave_p90_p99_null():
    runs = [bm.parse(_android()), bm.parse(_android().replace("median=596 p95=622", "median=640 p95=700"))]
    warm = bm.warm_record(runs)
    assert warm["samples_ms"] == [] and [r["p50_ms"] for r in warm["runs"]] == [0.596, 0.64]
    s = warm["summary"]
    assert s["p50_ms"] == pytest.approx(0.618) and "median of 2" in s["p50_basis"]
    assert s["p90_ms"] is None and s["p99_ms"] is None and "never estimated" in s["p90_reason"]
    assert s["n"] == 168 and s["mean_ms"] == pytest.approx(0.5987) and s["p95_ms"] == pytest.approx(0.661)
    assert s["p90_upper_bound_ms"] == 0.7  # the largest run's p95: p90 <= p95 in every run
    cold = bm.cold_record(runs)
    assert cold["runs"][0]["total_ms"] == pytest.approx(3.412 + 1.731) and cold["runs"][0]["read_ms"] is None
    assert cold["init_ms"]["median"] == 3.412 and cold["interpreter_ms"] == {"n": 0}
    assert bm.memory_record(runs)["peak_rss_mb"] == 9.33594


# ---------------------------------------------------------------- through the fake adb


TINY = FIXTURES / "tiny-cnn.tflite"  # 2,650 parameters, made with litert-torch (the README says how)


def _stand_in(folder: Path, body: str, name: str = "benchmark_model") -> Path:
    """A program named like the binary; it logs the flags it was given to $FAKE_ADB_HOME."""
    path = folder / name
    path.write_text('#!/bin/sh\necho "$*" >> "$FAKE_ADB_HOME/benchmark_model.args"\n' + body)
    path.chmod(0o755)
    return path


def _wheel_stand_in(folder: Path) -> Path:
    """The Android tool's flags mapped onto the wheel's real litert-benchmark (same model, real run)."""
    return _stand_in(folder, (
        "for a in \"$@\"; do case \"$a\" in\n"
        "  --graph=*) graph=\"${a#--graph=}\";; --num_threads=*) threads=\"${a#--num_threads=}\";;\n"
        "  --num_runs=*) runs=\"${a#--num_runs=}\";; --warmup_runs=*) warmup=\"${a#--warmup_runs=}\";;\n"
        "esac; done\n"
        f"exec {sys.executable} -m ai_edge_litert.tools.benchmark_litert_model --model=\"$graph\" "
        "--num_threads=\"$threads\" --num_runs=\"$runs\" --warmup_runs=\"$warmup\"\n"))


def _replay_stand_in(folder: Path) -> Path:
    """Prints the fixture $FAKE_ADB_HOME/replay names and exits with the code in replay-exit."""
    return _stand_in(folder, f'cat "{FIXTURES}/$(cat "$FAKE_ADB_HOME/replay")"\n'
                             'exit "$(cat "$FAKE_ADB_HOME/replay-exit")"\n')


def _install_phone(home: Path, mp: pytest.MonkeyPatch) -> Path:
    home.mkdir()
    bin_dir = fake_adb.install(home, "pixel6", SERIAL)
    mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return home


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    return _install_phone(tmp_path / "fake-adb", monkeypatch)


def _target(tool: Path, **measurement) -> TargetConfig:
    return TargetConfig(name="phone", runner="adb", backends=LITERT_BACKENDS, threads=1,
                        adb={"benchmark_model": tool}, measurement={**FAST, **measurement},
                        budgets={"p90_ms": 50.0, "cold_start_ms": 5000.0, "memory_mb": 500.0})


def _bench_on(runner, target: TargetConfig, model: Path, work: Path) -> dict:
    art = Artifact(kind="tflite", path=model, precision="fp32", role="student", backend="litert", meta={})
    inputs = work / "inputs.npy"
    np.save(inputs, np.zeros((4, 1, 32, 32), np.float32))
    return bench_artifact(art, target, EvalSet(inputs), work / "bench", runner=runner)


@pytest.fixture(scope="module")
def replaying(tmp_path_factory):
    """One phone and one open runner whose benchmark_model replays a chosen fixture: every
    replay test shares its set-up (the lock, the phone's facts, the push)."""
    folder = tmp_path_factory.mktemp("replay")
    with pytest.MonkeyPatch.context() as mp:
        home = _install_phone(folder / "fake-adb", mp)
        target = _target(_replay_stand_in(folder))
        runner = open_runner(target)
        n = iter(range(1000))

        def bench(fixture: str, code: int = 0, other: TargetConfig | None = None) -> dict:
            (home / "replay").write_text(fixture)
            (home / "replay-exit").write_text(str(code))
            work = folder / f"work-{next(n)}"
            work.mkdir()
            return _bench_on(runner, other or target, TINY, work)

        yield bench, target, home
        runner.close()


@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert is not installed (the [litert] extra)")
def test_bench_of_a_tflite_through_adb_runs_the_tool_and_records_its_numbers(phone, tmp_path):
    target = _target(_wheel_stand_in(tmp_path))
    runner = open_runner(target)
    try:
        record = _bench_on(runner, target, TINY, tmp_path)
    finally:
        runner.close()
    assert record["status"] == "ok", record["status_detail"]
    Result.model_validate(record)  # the results schema's reader accepts it
    # The tool got benchmark_model's flags for the pushed model, pinned to the Pixel 6's big cores.
    args = (phone / "benchmark_model.args").read_text().splitlines()
    assert len(args) == FAST["cold_runs"]  # one fresh process per cold run
    assert re.search(r"--graph=\S*/data/local/tmp/edgedistill/run-\S+/m/\w+/tiny-cnn\.tflite", args[0])
    assert "--num_threads=1 --warmup_runs=3 --warmup_min_secs=0 --num_runs=20" in args[0]
    assert "--report_peak_memory_footprint=true" in args[0]
    assert (phone / "taskset.log").read_text().split()[-2:] == ["c0", "c0"]  # cpu6-7: the X1 cores
    tool = record["tool"]
    assert tool["name"] == "benchmark_model" and tool["format"] == bm.WHEEL_FORMAT
    assert tool["command"].startswith("taskset c0 /data/local/tmp/edgedistill/run-")
    assert record["runner"]["kind"] == "benchmark_model" and record["runner"]["binary"].endswith("benchmark_model")
    # The record's numbers are the tool's: each run's median as it printed it (its logs are kept).
    logs = [(tmp_path / "bench" / f"student-fp32-litert.benchmark_model.{i}.log").read_text() for i in (1, 2)]
    assert tool["runs"][0]["evidence"] == [line for line in logs[0].splitlines()  # the 10 lines read, as printed
                                           if re.match(r"(Model initialization|Warmup \(|Inference \()", line)]
    medians = [float(re.search(r"Inference \(median\):\s+([\d.]+) ms", log).group(1)) for log in logs]
    assert [r["p50_ms"] for r in record["warm"]["runs"]] == medians
    assert record["warm"]["summary"]["p50_ms"] == pytest.approx(float(np.median(medians)))
    assert record["warm"]["summary"]["p90_ms"] is None and record["warm"]["samples_ms"] == []
    inits = [float(re.search(r"Model initialization:\s+([\d.]+) ms", log).group(1)) for log in logs]
    assert [r["init_ms"] for r in record["cold"]["runs"]] == inits
    assert all(r["total_ms"] == pytest.approx(r["init_ms"] + r["first_inference_ms"]) for r in record["cold"]["runs"])
    assert record["accuracy"]["measured"] is False and "random inputs" in record["accuracy"]["reason"]
    assert record["conditions"]["thermal_status"] == 0 and record["conditions"]["big_cores"] == [6, 7]
    # Gated as any result: p90 passes on its upper bound (the largest run's p95), the cold start
    # on its median; memory is not reported by the wheel's tool.
    checks = {c.budget: c for c in check_result("phone", record, target.budgets, {})}
    p95s = [float(re.search(r"Inference \(p95\):\s+([\d.]+) ms", log).group(1)) for log in logs]
    assert checks["p90_ms"].outcome == "PASS" and checks["p90_ms"].value == max(p95s)
    assert "upper bound" in checks["p90_ms"].detail
    assert checks["cold_start_ms"].outcome == "PASS"
    assert checks["cold_start_ms"].value == record["cold"]["total_ms"]["median"]
    assert checks["memory_mb"].outcome == "INCONCLUSIVE"


def test_the_android_format_lands_in_the_record_end_to_end(replaying):
    bench, target, home = replaying
    swept = target.model_copy(update={"sweep": {"threads": [1, 2], "batch_sizes": [1, 4]}})
    record = bench("android-benchmark_model-reconstructed.txt", other=type(target).model_validate(swept.model_dump()))
    assert record["status"] == "ok", record["status_detail"]
    Result.model_validate(record)
    assert record["tool"]["format"] == bm.ANDROID_FORMAT
    assert any(line.startswith("INFO: count=84 ") for line in record["tool"]["runs"][0]["evidence"])
    assert record["cold"]["init_ms"]["median"] == 3.412 and record["cold"]["first_inference_ms"]["median"] == 1.731
    assert record["warm"]["summary"]["p50_ms"] == 0.596 and record["warm"]["summary"]["p95_ms"] == 0.622
    assert record["memory"]["peak_rss_mb"] == 9.33594
    checks = {c.budget: c for c in check_result("phone", record, target.budgets, {})}
    assert checks["memory_mb"].outcome == "PASS" and checks["memory_mb"].value == 9.33594
    # Sweep: one more run of the tool per thread count; other batch sizes are not the tool's to run.
    points = {(p["threads"], p["batch_size"]): p for p in record["sweep"]}
    assert sorted(points) == [(1, 4), (2, 1), (2, 4)]
    assert points[(2, 1)]["status"] == "ok" and points[(2, 1)]["summary"]["p50_ms"] == 0.596
    assert points[(1, 4)]["status"] == points[(2, 4)]["status"] == "unsupported"
    assert (home / "benchmark_model.args").read_text().splitlines()[-1].count("--num_threads=2") == 1


@pytest.mark.parametrize("fixture, code, said", [
    ("android-benchmark_model-failed-reconstructed.txt", 1, "Didn't find op for builtin opcode"),
    ("android-benchmark_model-failed-reconstructed.txt", 0, "Didn't find op"),  # exit 0 but ERROR lines
    ("litert-benchmark-bad-model.stderr", 1, "should be 'TFL3'"),
    ("litert-benchmark-missing-model.stderr", 1, "Model file not found"),
])
def test_a_failing_tool_is_one_line_with_its_own_error(replaying, fixture, code, said):
    bench, target, _ = replaying
    record = bench(fixture, code)
    assert record["status"] == "error" and said in record["status_detail"]
    assert f"(exit {code})" in record["status_detail"] and "\n" not in record["status_detail"]
    assert "warm" not in record and record["tool"]["runs"] == []
    assert {c.outcome for c in check_result("phone", record, target.budgets, {})} == {"INCONCLUSIVE"}


def test_a_program_the_phone_cannot_run_is_an_error_with_the_shells_line(phone, tmp_path):
    tool = tmp_path / "benchmark_model"
    tool.write_text("#!/nonexistent/interpreter\n")
    target = _target(tool)
    runner = open_runner(target)
    try:
        record = _bench_on(runner, target, TINY, tmp_path)
    finally:
        runner.close()
    assert record["status"] == "error" and re.search(r"\(exit 12[67]\)", record["status_detail"])


def test_a_binary_missing_not_a_program_or_for_another_cpu_is_refused_at_open(phone, tmp_path):
    text = tmp_path / "benchmark_model"
    text.write_text("not a program\n")
    with pytest.raises(UsageError, match=r"is not a program \(expected an ELF binary"):
        open_runner(_target(text))
    elf = Path(os.path.realpath(sys.executable))  # this host's x86-64 ELF; the Pixel 6 is arm64-v8a
    with pytest.raises(UsageError, match=r"is built for x86-64, the phone FA6X01234 is arm64-v8a"):
        open_runner(_target(elf))
    assert not any(p.name.startswith("run-") for p in (phone / "phone/data/local/tmp/edgedistill").iterdir())
    gone = _target(text)
    text.unlink()
    with pytest.raises(UsageError, match="benchmark_model .* does not exist"):
        open_runner(gone)


def test_the_record_makes_a_results_file_that_loads_gates_and_renders(replaying, tmp_path):
    """results.json as the bench writes it: read back through the schema, gated (p90 INCONCLUSIVE
    naming why, so no PASS), and every report renders the tool's numbers (no samples needed)."""
    from edgedistill.gate import gate_results
    from edgedistill.report import csv, html, markdown
    from edgedistill.report.results import load_results, new_results, write_results

    bench, target, _ = replaying
    record = bench("android-benchmark_model-reconstructed.txt")
    tight = {**target.budgets.model_dump(), "p90_ms": 0.6}  # under the run's p95 (0.622): the bound cannot decide
    results = new_results("r", {"tool_version": "test"}, {"teacher_top1": None})
    results["targets"].append({"name": target.name, "device": target.device, "threads": target.threads,
                               "runner": target.runner, "budgets": tight, "results": [record]})
    results["complete"] = True
    path = tmp_path / "results.json"
    write_results(path, results)
    loaded = load_results(path)
    verdict, checks = gate_results(loaded)
    assert verdict == "INCONCLUSIVE"  # never FAIL on a bound, never PASS without a measurement
    assert "p95, 0.622 > 0.6 cannot decide" in next(c.detail for c in checks if c.budget == "p90_ms")
    assert {c.budget: c.outcome for c in checks} == {"p90_ms": "INCONCLUSIVE", "cold_start_ms": "PASS",
                                                      "memory_mb": "PASS"}
    for rendered in (markdown.render(loaded), html.render(loaded), csv.render(loaded)):
        assert "0.596" in rendered  # the tool's median, as the p50 column


def test_a_phone_lost_during_a_run_is_inconclusive_and_keeps_what_was_measured(tmp_path, monkeypatch):
    home = _install_phone(tmp_path / "fake-adb", monkeypatch)
    fake_adb.configure(home, offline_at_probe=2)  # the second run of the tool finds the phone gone
    (home / "replay").write_text("android-benchmark_model-reconstructed.txt")
    (home / "replay-exit").write_text("0")
    target = _target(_replay_stand_in(tmp_path))
    runner = open_runner(target)
    try:
        record = _bench_on(runner, target, TINY, tmp_path)
    finally:
        runner.close()
    assert record["status"] == "inconclusive" and "lost the link to FA6X01234" in record["status_detail"]
    assert len(record["tool"]["runs"]) == 1 and record["warm"]["runs"][0]["p50_ms"] == 0.596
    assert {c.outcome for c in check_result("phone", record, target.budgets, {})} == {"INCONCLUSIVE"}
