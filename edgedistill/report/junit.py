"""JUnit XML from a results document, so a CI system lists every budget check as a test.

One <testsuite> per target, one <testcase> per check (classname "edgedistill.<target>.<artifact>",
name = the budget). FAIL is a <failure>; INVALID and INCONCLUSIVE are an <error> whose type
names the outcome: CI then shows them as not passed, yet apart from a budget that was missed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgedistill.gate import AT_LEAST, FAIL, INCONCLUSIVE, INVALID
from edgedistill.report.results import incomplete_reason, shown_verdict


def _num(value: float) -> str:
    return f"{value:.4g}"


def check_message(c: dict) -> str:
    """One line with the value against its limit, e.g. "p90_ms 2.5 > 2"."""
    budget, value, limit = c["budget"], c.get("value"), c.get("limit")
    if c["outcome"] == FAIL and value is not None and limit is not None:
        text = f"{budget} {_num(value)} {'<' if budget in AT_LEAST else '>'} {limit:g}"
    elif value is None:
        text = f"{budget} not measured (limit {limit:g})" if limit is not None else f"{budget} not measured"
    else:
        text = f"{budget} {_num(value)} (limit {limit:g})"
    detail = c.get("detail") or ""
    # The gate's FAIL detail restates the comparison; anything else adds the reason.
    return f"{text}: {detail}" if detail and c["outcome"] != FAIL else text


def _testcase(suite: ET.Element, c: dict) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"edgedistill.{c['target']}.{c['artifact']}",
                         name=c["budget"])
    message = check_message(c)
    if c["outcome"] == FAIL:
        ET.SubElement(case, "failure", message=message, type=FAIL).text = c.get("detail") or message
    elif c["outcome"] in (INVALID, INCONCLUSIVE):
        ET.SubElement(case, "error", message=message, type=c["outcome"]).text = c.get("detail") or message


def _properties(suite: ET.Element, results: dict) -> None:
    props = ET.SubElement(suite, "properties")
    env = results.get("environment") or {}
    for name, value in (("verdict", shown_verdict(results)), ("tool_version", env.get("tool_version")),
                        ("schema", results.get("schema")), ("run", results.get("run"))):
        ET.SubElement(props, "property", name=name, value="" if value is None else str(value))


def _counts(element: ET.Element, cases: list[ET.Element]) -> None:
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    element.set("errors", str(sum(c.find("error") is not None for c in cases)))
    element.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))


def build(results: dict) -> ET.Element:
    root = ET.Element("testsuites", name=f"edgedistill {results.get('run', '')}".strip())
    checks = results.get("checks") or []
    # Targets in file order; a check naming a target the file does not list still gets a suite.
    names = [t["name"] for t in results.get("targets") or []]
    names += [c["target"] for c in checks]
    for name in dict.fromkeys(names):
        suite = ET.SubElement(root, "testsuite", name=name)
        if results.get("created"):
            suite.set("timestamp", results["created"])
        _properties(suite, results)
        for c in checks:
            if c["target"] == name:
                _testcase(suite, c)
        _counts(suite, suite.findall("testcase"))
    if reason := incomplete_reason(results):
        # An interrupted run: CI must show it as not passed even if every check it got to passed.
        suite = ET.SubElement(root, "testsuite", name="edgedistill")
        _properties(suite, results)
        case = ET.SubElement(suite, "testcase", classname="edgedistill", name="complete")
        ET.SubElement(case, "error", type=INCONCLUSIVE, message=reason).text = reason
        _counts(suite, [case])
    elif not checks:
        # Nothing was gated, and the verdict says so (never a silent PASS); an empty report would
        # show CI all green, so the verdict itself becomes the one test.
        suite = ET.SubElement(root, "testsuite", name="edgedistill")
        _properties(suite, results)
        case = ET.SubElement(suite, "testcase", classname="edgedistill", name="verdict")
        verdict = results.get("verdict") or INCONCLUSIVE
        if results.get("not_gated"):  # `bench PATH` on a target without budgets: a measurement
            ET.SubElement(case, "skipped", message=results["not_gated"])
        elif verdict != "PASS":
            ET.SubElement(case, "error", type=verdict, message=f"verdict {verdict}: no budget was checked")
        _counts(suite, [case])
    _counts(root, root.findall("testsuite/testcase"))
    return root


def render(results: dict) -> str:
    root = build(results)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
