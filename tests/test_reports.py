"""Reports people read, rendered from a results file alone: HTML with plots, JUnit XML, Markdown
and the GitHub step summary. Checked against a small hand-made golden file
(tests/golden/results_v3.json: two targets, a teacher and students per target, one invalid, one
skipped, a model-cache block, sweeps, and checks with every outcome) and an
"edgedistill.results/1"-shaped copy of it."""

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

from edgedistill.report import html, junit, markdown
from edgedistill.report.step_summary import append_step_summary

GOLDEN = Path(__file__).parent / "golden" / "results_v3.json"
NASTY = '<script>alert("x")</script>&'


@pytest.fixture
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def _all_results(doc: dict) -> list[dict]:
    return [r for t in doc["targets"] for r in t["results"]]


def _as_v1(doc: dict) -> dict:
    """What an "edgedistill.results/1" file looked like: cold.load_ms for read+compile, and no
    problems, conditions, sweep, integrity, cache, overheads or early-stopping bound."""
    doc = copy.deepcopy(doc)
    doc["schema"] = "edgedistill.results/1"
    for key in ("usable_cores", "thermal", "seed"):
        doc["environment"].pop(key)
    for t in doc["targets"]:
        t.pop("sweep")
        for r in t["results"]:
            for key in ("problems", "conditions", "sweep", "integrity"):
                r.pop(key, None)
            cold = r.get("cold")
            if cold:
                for key in ("kind", "kind_detail", "cache", "read_ms", "compile_ms"):
                    cold.pop(key)
                for run in cold["runs"]:
                    run["load_ms"] = run.pop("read_ms") + run.pop("compile_ms")
                loads = sorted(run["load_ms"] for run in cold["runs"])
                cold["load_ms"] = {"n": len(loads), "median": loads[len(loads) // 2], "min": loads[0],
                                   "max": loads[-1]}
            warm = r.get("warm")
            if warm:
                for key in ("loop_overhead_ms", "harness_overhead_ms", "same_input"):
                    warm.pop(key)
                warm["summary"].pop("p90_early_stopping_ms")
    return doc


class _Page(HTMLParser):
    """What a browser would see: tags, text outside plots, and each plot's SVG by its caption."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.svg_paths: dict[str, int] = {}  # figcaption -> <path> elements in its SVG
        self.svg_text: dict[str, list[str]] = {}
        self._caption: str | None = None
        self._in_caption = False
        self._svg_depth = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "figcaption":
            self._in_caption, self._caption = True, ""
        elif tag == "svg":
            self._svg_depth += 1
            self.svg_paths[self._caption] = 0
            self.svg_text[self._caption] = []
        elif tag == "path" and self._svg_depth:
            self.svg_paths[self._caption] += 1

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption = False
        elif tag == "svg":
            self._svg_depth -= 1

    def handle_data(self, data):
        if self._in_caption:
            self._caption += data
        elif self._svg_depth:
            self.svg_text[self._caption].append(data)
        else:
            self.text.append(data)

    @property
    def body_text(self) -> str:
        return "".join(self.text)


def _page(doc: dict) -> tuple[str, _Page]:
    text = html.render(doc)
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


# ---------------------------------------------------------------- HTML


def test_html_has_every_plot_drawn_and_every_artifact_named(golden):
    _, page = _page(golden)
    names = [t["name"] for t in golden["targets"]]
    expected = [f"{n}: warm latency per inference" for n in names]
    expected += [f"{n}: cold start, fresh process to first result (medians)" for n in names]
    expected += [f"{n}: throughput sweep" for n in names]
    expected += ["Accuracy against p90 latency (every artifact, every target)",
                 "Cold start with the runtime's model cache: miss vs hit (medians)"]
    assert sorted(page.svg_paths) == sorted(expected)
    for caption, paths in page.svg_paths.items():
        assert paths > 10, f"{caption}: {paths} <path> elements, the plot looks empty"
    for r in _all_results(golden):
        assert r["artifact"] in page.body_text
    # Plot labels are real SVG text: the measured artifacts are named in the latency plot.
    warm_labels = "".join(page.svg_text["local-cpu: warm latency per inference"])
    for r in golden["targets"][0]["results"]:
        assert (r["artifact"] in warm_labels) == ("warm" in r)


def test_html_shows_verdict_environment_problems_and_every_check(golden):
    _, page = _page(golden)
    text = page.body_text
    env = golden["environment"]
    assert f"Verdict: {golden['verdict']}" in text
    for value in (env["cpu_model"], env["platform"], env["versions"]["onnxruntime"]):
        assert value in text
    invalid = next(r for r in _all_results(golden) if r["status"] == "invalid")
    assert f"{invalid['problems'][0]['kind']}: {invalid['problems'][0]['detail']}" in text
    skipped = next(r for r in _all_results(golden) if r["status"] == "skipped")
    assert skipped["status_detail"] in text
    outcome_cells = [tag for tag in page.tags if tag[0] == "td" and tag[1].get("class") in
                     ("PASS", "FAIL", "INVALID", "INCONCLUSIVE")]
    assert Counter(a["class"] for _, a in outcome_cells) == Counter(c["outcome"] for c in golden["checks"])


def test_html_is_self_contained(golden):
    raw, page = _page(golden)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("#", "data:")), (tag, name, value)
    assert "url(http" not in raw and "@import" not in raw


def test_html_escapes_text_from_the_results_file(golden):
    invalid = next(r for r in golden["targets"][0]["results"] if r["status"] == "invalid")
    old = invalid["artifact"]
    invalid["artifact"] = NASTY
    invalid["problems"][0]["detail"] = NASTY
    for c in golden["checks"]:
        if c["artifact"] == old:
            c["artifact"] = NASTY
    golden["run"] = NASTY
    raw, page = _page(golden)
    assert "script" not in {tag for tag, _ in page.tags}
    assert "<script>" not in raw
    assert NASTY in page.body_text  # shown as text, exactly as written
    assert NASTY in "".join(page.svg_text["local-cpu: warm latency per inference"])


def test_html_leaves_out_a_plot_without_data_with_a_note(golden):
    for r in _all_results(golden):
        r.get("cold", {}).pop("cache", None)
        r["sweep"] = []
    _, page = _page(golden)
    assert not any("cache" in caption or "sweep" in caption for caption in page.svg_paths)
    assert "No model-cache measurements in this file." in page.body_text
    assert page.body_text.count("No sweep on this target") == len(golden["targets"])


def test_html_of_a_file_where_nothing_ran_has_notes_and_no_plots(golden):
    for t in golden["targets"]:
        t["results"] = [r for r in t["results"] if r["status"] == "skipped"]
    golden["checks"] = [c for c in golden["checks"] if c["outcome"] == "INCONCLUSIVE"]
    golden["verdict"] = "INCONCLUSIVE"
    raw, page = _page(golden)
    assert "<svg" not in raw
    assert "No warm samples on this target" in page.body_text
    assert "No artifact has both an accuracy and a warm latency." in page.body_text


def test_reports_render_a_schema_1_file(golden):
    old = _as_v1(golden)
    _, page = _page(old)
    cold_plot = "local-cpu: cold start, fresh process to first result (medians)"
    assert page.svg_paths[cold_plot] > 10
    legend = "".join(page.svg_text[cold_plot])
    assert "load" in legend and "compile" not in legend  # the /1 part, not the /2 split
    assert "No model-cache measurements in this file." in page.body_text
    md = markdown.render(old)
    assert "busy_machine" not in md and "Sweep on" not in md
    assert ET.fromstring(junit.render(old)).get("tests") == str(len(old["checks"]))


def test_plot_code_is_not_imported_with_the_report_modules():
    code = ("import sys; import edgedistill.report.html, edgedistill.report.junit, edgedistill.report.plots, "
            "edgedistill.report.step_summary; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- JUnit


def test_junit_has_a_testcase_per_check_and_counts_that_match(golden):
    root = ET.fromstring(junit.render(golden))
    checks = golden["checks"]
    outcomes = Counter(c["outcome"] for c in checks)
    assert root.tag == "testsuites"
    assert [s.get("name") for s in root.findall("testsuite")] == [t["name"] for t in golden["targets"]]
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(checks)
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (f"edgedistill.{c['target']}.{c['artifact']}", c["budget"]) for c in checks]
    assert len(root.findall("testsuite/testcase/failure")) == outcomes["FAIL"]
    assert Counter(e.get("type") for e in root.findall("testsuite/testcase/error")) == Counter(
        {k: v for k, v in outcomes.items() if k in ("INVALID", "INCONCLUSIVE")})
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (
        str(len(checks)), str(outcomes["FAIL"]), str(outcomes["INVALID"] + outcomes["INCONCLUSIVE"]))
    for suite in root.findall("testsuite"):
        mine = [c for c in checks if c["target"] == suite.get("name")]
        assert suite.get("tests") == str(len(mine))
        assert suite.get("failures") == str(sum(c["outcome"] == "FAIL" for c in mine))
        assert suite.get("errors") == str(sum(c["outcome"] in ("INVALID", "INCONCLUSIVE") for c in mine))
        props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
        assert props["verdict"] == golden["verdict"]
        assert props["tool_version"] == golden["environment"]["tool_version"]


def test_junit_messages_carry_value_and_limit(golden):
    root = ET.fromstring(junit.render(golden))
    fail = next(c for c in golden["checks"] if c["outcome"] == "FAIL")
    assert root.find("testsuite/testcase/failure").get("message") == (
        f"{fail['budget']} {fail['value']:.4g} > {fail['limit']:g}")
    invalid = next(c for c in golden["checks"] if c["outcome"] == "INVALID")
    message = root.find("testsuite/testcase/error[@type='INVALID']").get("message")
    assert message.startswith(f"{invalid['budget']} {invalid['value']:.4g} (limit {invalid['limit']:g})")
    assert invalid["detail"] in message


def test_junit_without_checks_is_not_green(golden):
    golden["checks"], golden["verdict"] = [], "INCONCLUSIVE"
    root = ET.fromstring(junit.render(golden))
    assert root.get("errors") == "1"
    assert root.find(".//error").get("type") == "INCONCLUSIVE"


# ---------------------------------------------------------------- Markdown and step summary


def test_markdown_shows_problems_cache_cold_kind_early_stopping_overhead_and_sweep(golden):
    md = markdown.render(golden)
    invalid = next(r for r in _all_results(golden) if r["status"] == "invalid")
    assert f"{invalid['problems'][0]['kind']}: {invalid['problems'][0]['detail']}" in md
    cached = next(r for r in _all_results(golden) if (r.get("cold") or {}).get("cache"))
    cache = cached["cold"]["cache"]
    assert (f"miss {cache['miss']['total_ms']['median']:.0f} → hit {cache['hit']['total_ms']['median']:.0f} "
            f"(saves {cache['saving_ms']:.0f} ms") in md
    assert "cold-disk" in md and "warm-disk" in md
    summary = cached["warm"]["summary"]
    assert f"{summary['p90_ms']:.3f} ({summary['p90_early_stopping_ms']:.3f})" in md
    assert f"{cached['warm']['harness_overhead_ms']:.4f}" in md
    point = next(p for p in cached["sweep"] if p["status"] == "ok")
    assert f"| {cached['artifact']} | {point['threads']} | {point['batch_size']} | ok |" in md
    assert "unsupported: the model has a fixed batch size of 1" in md
    assert "**FAIL** `pi5` `student-int8-openvino` p90_ms" in md


def test_step_summary_appends_and_does_nothing_without_the_variable(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert append_step_summary("## first", env) == summary
    assert append_step_summary("## second\n", env) == summary
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert text.index("## first") < text.index("## second")
    assert append_step_summary("## ignored", {}) is None
    assert append_step_summary("## ignored", {"GITHUB_STEP_SUMMARY": ""}) is None
    assert "ignored" not in summary.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


# ---------------------------------------------------------------- CLI


def test_cli_report_writes_junit(tmp_path, cli_env, golden):
    out = tmp_path / "x.xml"
    r = run_cli(["report", GOLDEN, "--format", "junit", "-o", out], env=cli_env)
    assert r.returncode == 0, r.stderr
    assert len(ET.parse(out).getroot().findall("testsuite/testcase")) == len(golden["checks"])


def test_cli_report_html_to_stdout(cli_env, golden):
    r = run_cli(["report", GOLDEN, "--format", "html"], env=cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.count("<svg") == 8


def test_cli_report_refuses_a_wrong_schema_in_one_line(tmp_path, cli_env):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"schema": "other/9"}))
    r = run_cli(["report", bad, "--format", "junit"], env=cli_env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "expected schema" in r.stderr
    assert r.stdout == ""
