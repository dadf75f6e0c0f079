"""Results files are input: every way one can be wrong is a one-line usage error (exit 2) or a
documented verdict, never an internal error (issue 9, finding 8 for results; RELIABILITY 20).

Most cases run `edgedistill.cli.main` in-process (sys.argv patched, output captured) for speed;
a few go through a real subprocess.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedistill import cli
from edgedistill.report import results as res

GOLDEN = Path(__file__).parent / "golden" / "results_v3.json"
DOCUMENTED = {0, 1, 2, 4, 5}


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def run_main(*args) -> tuple[int, str, str]:
    """The CLI's main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["edgedistill", *map(str, args)]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(code: int, out: str, err: str, expected_code: int = 2) -> str:
    assert code == expected_code, (code, out, err)
    lines = [line for line in err.splitlines() if not line.startswith("  hint: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    return lines[0]


def write(folder: Path, name: str, doc) -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# ---------------------------------------------------------------- structure: exit 2 naming the field


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["targets"][0]["results"][1].update(status="weird"), "targets[0].results[1].status", "'ok'"),
    (lambda d: d["targets"][0]["results"][0].pop("artifact"), "targets[0].results[0].artifact", "required"),
    (lambda d: d["targets"][1]["results"][0]["warm"].update(samples_ms="fast"),
     "targets[1].results[0].warm.samples_ms", "valid list"),
    (lambda d: d["targets"][0].update(threads="1"), "targets[0].threads", "valid integer"),
    (lambda d: d["checks"][0].update(limit="2"), "checks[0].limit", "valid number"),
    (lambda d: d.update(targets={}), "targets", "valid list"),
    (lambda d: d.pop("complete"), "complete", "required"),
    (lambda d: d["targets"][0]["results"][0].update(size_bytes=10**30), "targets[0].results[0].size_bytes",
     "less than or equal"),
    (lambda d: d.update(missing=[{"target": "pi5", "artifact": "x"}]), "(top level)", "complete cannot list"),
])
def test_wrong_structure_is_exit_2_naming_the_field(tmp_path, mutate, field, words):
    doc = golden()
    mutate(doc)
    path = write(tmp_path, "results.json", doc)
    for args in (["gate", path], ["report", path], ["compare", GOLDEN, path]):
        line = assert_one_error_line(*run_main(*args))
        assert f"field {field}:" in line and words in line, line


def test_extra_keys_inside_records_are_allowed(tmp_path):
    """Writers may add fields within a version (another engineer adds per-run warm medians)."""
    doc = golden()
    doc["targets"][0]["results"][1]["warm"]["run_medians_ms"] = [0.31, 0.32]
    doc["targets"][0]["results"][1]["something_new"] = {"any": ["shape"]}
    doc["new_top_level"] = 1
    code, out, err = run_main("gate", write(tmp_path, "results.json", doc))
    assert code == 1 and "error:" not in err  # the golden file's verdict is FAIL


def test_older_schema_is_refused_with_a_hint_to_rebench(tmp_path):
    doc = golden()
    doc["schema"] = "edgedistill.results/2"
    code, out, err = run_main("gate", write(tmp_path, "results.json", doc))
    line = assert_one_error_line(code, out, err)
    assert "expected schema 'edgedistill.results/3', found 'edgedistill.results/2'" in line
    assert "hint: re-run `edgedistill bench`" in err


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00\x01binary \x89PNG", "not UTF-8"),
    ("{\"schema\": \"edgedistill.results/3\", \"run\": \"caf\xe9\"}".encode("latin-1"), "not UTF-8"),
    (("[" * 50000 + "]" * 50000).encode(), "nested too deeply"),
    (("{\"a\":" * 50000 + "1" + "}" * 50000).encode(), "nested too deeply"),
    (b'{"schema": "edgedistill.results/3", "run": ' + b"9" * 5000 + b"}", "not a JSON results file"),
    (b"", "not a JSON results file"),
])
def test_unreadable_results_files_are_exit_2(tmp_path, content, words):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    for args in (["gate", path], ["report", path, "--format", "csv"], ["compare", path, GOLDEN]):
        assert words in assert_one_error_line(*run_main(*args))


def test_deep_nesting_inside_a_valid_file_is_exit_2_or_read(tmp_path):
    """Deep nesting where extra keys are allowed: either read (the nesting is not looked at) or a
    one-line error, never a RecursionError."""
    doc = golden()
    deep = node = {}
    for _ in range(900):
        node["x"] = {}
        node = node["x"]
    doc["targets"][0]["results"][0]["session"] = deep
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    code, out, err = run_main("gate", path)
    assert code in (1, 2) and "Traceback" not in err and "internal error" not in err


def test_a_directory_is_not_a_results_file(tmp_path):
    line = assert_one_error_line(*run_main("gate", tmp_path))
    assert f"{tmp_path} is a directory, expected a results file" in line


def test_report_output_pointing_at_a_directory_is_exit_2(tmp_path):
    code, out, err = run_main("report", GOLDEN, "--format", "md", "-o", tmp_path)
    assert f"--output {tmp_path} is a directory" in assert_one_error_line(code, out, err)
    assert list(tmp_path.iterdir()) == []


def test_report_output_in_a_missing_folder_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_main("report", GOLDEN, "-o", blocker / "report.md")
    assert "cannot write --output" in assert_one_error_line(code, out, err)


def test_subprocess_binary_and_wrong_structure(tmp_path, cli_env):
    """The same through a real process: one line, exit 2, no traceback."""
    binary = tmp_path / "binary.json"
    binary.write_bytes(os.urandom(256) + b"\xff")
    doc = golden()
    doc["targets"][0]["results"][0]["role"] = "oracle"
    wrong = write(tmp_path, "wrong.json", doc)
    for args, words in ((["gate", binary], "not UTF-8"), (["report", wrong, "--format", "junit"], "role")):
        r = run_cli(args, env=cli_env)
        assert_one_error_line(r.returncode, r.stdout, r.stderr)
        assert words in r.stderr


# ---------------------------------------------------------------- incomplete files (finding 3)


def _incomplete(signal_name: str | None = "SIGTERM") -> dict:
    doc = golden()
    doc["targets"][1]["results"] = doc["targets"][1]["results"][:1]
    doc.update(complete=False, interrupted=signal_name, verdict=None, checks=[],
               missing=[{"target": "pi5", "artifact": "student-int8-openvino"}])
    return doc


@pytest.mark.parametrize("fmt", ["md", "csv", "html", "junit"])
def test_reliability_26_every_report_of_an_incomplete_file_says_so_and_exits_5(tmp_path, fmt):
    """RELIABILITY 26: a report of an interrupted run's file is INCONCLUSIVE (exit 5) and says why
    (the signal, the missing artifact) inside the report itself."""
    path = write(tmp_path, "results.json", _incomplete())
    out_file = tmp_path / f"report.{fmt}"
    code, out, err = run_main("report", path, "--format", fmt, "-o", out_file)
    assert code == 5, err
    assert "INCONCLUSIVE" in err and "interrupted by SIGTERM" in err
    text = out_file.read_text()
    assert "student-int8-openvino" in text
    if fmt == "csv":
        assert "pi5,student-int8-openvino,,,,missing" in text
    else:
        assert "interrupted by SIGTERM" in text and "INCONCLUSIVE" in text
    if fmt == "junit":
        assert 'name="complete"' in text and 'type="INCONCLUSIVE"' in text


def test_reliability_26_gate_and_compare_refuse_an_incomplete_file_even_if_all_measured_passed(tmp_path):
    """RELIABILITY 26: every measured check passing does not make an interrupted run PASS."""
    doc = _incomplete()
    for t in doc["targets"]:  # keep only what passes its budgets
        t["results"] = [r for r in t["results"] if r["status"] == "ok" and r["role"] == "teacher"]
    path = write(tmp_path, "results.json", doc)
    code, out, err = run_main("gate", path)
    assert code == 5 and "not measured: pi5/student-int8-openvino" in out
    code, out, err = run_main("gate", path, "--json")
    assert code == 5 and json.loads(out)["verdict"] == "INCONCLUSIVE"
    code, out, err = run_main("gate", GOLDEN, "--baseline", path)
    assert code == 5 and f"baseline {path}" in out
    code, out, err = run_main("compare", GOLDEN, path)
    assert "results incomplete" in assert_one_error_line(code, out, err, expected_code=5)


def test_markdown_of_a_killed_run_says_it_did_not_finish():
    from edgedistill.report import markdown

    md = markdown.render(_incomplete(signal_name=None))
    assert "**Verdict: INCONCLUSIVE**" in md and "did not finish" in md


# ---------------------------------------------------------------- RELIABILITY 20: atomic rewrites


WRITER = r"""
import json, sys
from edgedistill.report.results import write_results
path = sys.argv[1]
docs = [json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))]
print("ready", flush=True)
i = 0
while True:
    write_results(path, docs[i % 2])
    i += 1
"""


def test_reliability_20_a_writer_killed_mid_write_leaves_a_whole_file(tmp_path):
    """RELIABILITY 20: a process rewriting results.json is SIGKILLed at 12 random moments; each
    time the file is one of the two whole documents (never truncated), and it still loads."""
    old, new = golden(), golden()
    new["run"] = "new"
    big = [float(i) for i in range(200_000)]  # a few MB: each write takes long enough to be hit
    for doc in (old, new):
        doc["targets"][0]["results"][1]["warm"]["samples_ms"] = big
    a, b = write(tmp_path, "a.json", old), write(tmp_path, "b.json", new)
    target = tmp_path / "out" / "results.json"
    res.write_results(target, old)
    import random

    rng = random.Random(0)
    for _ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(a), str(b)],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert res.load_results(target)["run"] in ("golden", "new")
        # A temporary file SIGKILL left is a hidden sibling, never the results file itself.
        assert {p.name for p in target.parent.iterdir() if not p.name.startswith(".results.json.")} == {"results.json"}


def test_reliability_20_interrupted_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """RELIABILITY 20: an interrupt (here: raised between write and rename) leaves the old file
    intact and removes the temporary one."""
    from edgedistill.interrupts import Interrupted

    p = tmp_path / "results.json"
    res.write_results(p, golden())

    def interrupted_replace(src, dst):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    doc = golden()
    doc["run"] = "new"
    with pytest.raises(Interrupted):
        res.write_results(p, doc)
    monkeypatch.undo()
    assert res.load_results(p)["run"] == "golden"
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]


# ---------------------------------------------------------------- property: never exit 3

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    """Every (path to a container, key) in a document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix, k
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):  # a few elements of long sample lists are enough
            yield prefix, i
            yield from _paths(v, (*prefix, i))


def _read_keys() -> set[str]:
    """Every field name the schema model declares: the keys readers use, where bugs hide."""
    from pydantic import BaseModel

    from edgedistill.report import schema

    models = [m for m in vars(schema).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    return {name for m in models for name in m.model_fields}


GOLDEN_DOC = golden()
GOLDEN_PATHS = list(_paths(GOLDEN_DOC))
READ_KEYS = sorted(_read_keys() & {key for _, key in GOLDEN_PATHS})


def _every(node, key: str):
    """Every dict in the document that has `key`."""
    if isinstance(node, dict):
        if key in node:
            yield node
        for v in list(node.values()):
            yield from _every(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _every(v, key)


@st.composite
def mutated_files(draw) -> bytes:
    kind = draw(st.sampled_from(["key", "key", "key", "mutate", "mutate", "bytes", "truncate", "nest"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    text = json.dumps(GOLDEN_DOC)
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    doc = copy.deepcopy(GOLDEN_DOC)
    if kind == "key":
        # One key the readers use, changed wherever it occurs: null (what an optional block looks
        # like), deleted, or another value. Reaches every renderer's use of that key at once.
        key, action = draw(st.sampled_from(READ_KEYS)), draw(st.sampled_from(["delete", "null", "value"]))
        value = None if action == "null" else draw(JSON_VALUES)
        for node in list(_every(doc, key)):
            if action == "delete":
                del node[key]
            else:
                node[key] = copy.deepcopy(value)
        return json.dumps(doc).encode()
    for _ in range(draw(st.integers(1, 4))):
        where, key = draw(st.sampled_from(GOLDEN_PATHS))
        node = doc
        try:
            for step in where:
                node = node[step]
            if kind == "nest":
                node[key] = "__NEST__"  # replaced in the text: deeper than json.dumps could write
            else:
                action = draw(st.sampled_from(["delete", "null", "value"]))
                if action == "delete" and isinstance(node, dict):
                    del node[key]
                else:  # null is what an optional block looks like: the likeliest to slip through
                    node[key] = None if action == "null" else draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    text = json.dumps(doc)
    if kind == "nest":
        depth = draw(st.sampled_from([50, 500, 5000, 100_000]))
        text = text.replace('"__NEST__"', "[" * depth + "1" + "]" * depth)
    return text.encode()


FAST_COMMANDS = [
    ("gate", "{f}"), ("gate", "{f}", "--json"), ("gate", "{g}", "--baseline", "{f}"),
    ("compare", "{g}", "{f}"), ("compare", "{f}", "{g}", "--json"),
    ("report", "{f}", "--format", "md"), ("report", "{f}", "--format", "csv"),
    ("report", "{f}", "--format", "junit"),
]


def _check_every_command(content: bytes, commands) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "results.json"
        f.write_bytes(content)
        for command in commands:
            args = [a.format(f=f, g=GOLDEN) for a in command]
            code, out, err = run_main(*args)
            assert code in DOCUMENTED, (code, args, err[-2000:])
            assert sum(line.startswith("error:") for line in err.splitlines()) <= 1, err
            assert "Traceback" not in out + err and "internal error" not in err, (args, err[-2000:])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=mutated_files())
def test_mutated_results_files_never_end_as_an_internal_error(content):
    """Issue 9 finding 8: gate, compare and report (md, csv, junit) fed mutations of a real
    results file (a key the readers use nulled, deleted or retyped everywhere, deleted keys,
    wrong types, huge nesting, truncation, random bytes) exit with a documented code other than
    3, print at most one error line and never a traceback."""
    _check_every_command(content, FAST_COMMANDS)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=mutated_files())
def test_mutated_results_files_never_break_the_html_report(content):
    """The same for the HTML report (fewer examples: its plots take seconds each)."""
    _check_every_command(content, [("report", "{f}", "--format", "html")])


def test_subprocess_mutations_are_documented_exits(tmp_path, cli_env):
    """Two mutated files through a real process, as CI would run it."""
    doc = golden()
    for node in _every(doc, "total_ms"):
        node["total_ms"] = None
    nulled = write(tmp_path, "nulled.json", doc)
    for args in (["report", nulled, "--format", "md"], ["gate", nulled]):
        r = run_cli(args, env=cli_env)
        assert r.returncode in DOCUMENTED and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def test_names_in_a_results_file_are_text_not_markup(tmp_path):
    """An artifact, target or detail like "[/x]" in a results file is printed as it is by gate
    and compare: rich markup in it neither vanishes nor crashes the renderer (exit 3)."""
    import json

    from conftest import run_cli

    doc = json.loads((GOLDEN).read_text())
    for r in doc["targets"][0]["results"]:
        r["artifact"] = f"[/x]{r['artifact']}[bold]"
    for c in doc["checks"]:
        c["artifact"] = f"[/x]{c['artifact']}[bold]"
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    gate = run_cli(["gate", path])
    assert gate.returncode in (0, 1) and "Traceback" not in gate.stderr, gate.stderr
    assert "[/x]student" in gate.stdout.replace("\n", "")
    compare = run_cli(["compare", path, path])
    assert compare.returncode == 0, compare.stderr
    assert "[/x]student" in compare.stdout.replace("\n", "")
