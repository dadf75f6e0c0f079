import json
import os

import pytest

from edgedistill.errors import UsageError
from edgedistill.report import results as res


def test_round_trip(tmp_path):
    r = res.new_results("run", {"tool_version": "x"}, {"teacher_top1": 0.9})
    p = tmp_path / "results.json"
    res.write_results(p, r)
    assert res.load_results(p) == r


def test_reliability_20_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    """RELIABILITY 20: interrupted between write and rename: the old file stays, no temp file."""
    p = tmp_path / "results.json"
    old = res.new_results("old", {}, {})
    res.write_results(p, old)

    def torn_replace(src, dst):
        raise KeyboardInterrupt  # the process is interrupted between write and rename

    monkeypatch.setattr(os, "replace", torn_replace)
    with pytest.raises(KeyboardInterrupt):
        res.write_results(p, res.new_results("new", {}, {}))
    assert json.loads(p.read_text())["run"] == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_wrong_schema_is_refused(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(UsageError, match="expected schema 'edgedistill.results/3', found 'other/9'"):
        res.load_results(p)
    p.write_text(json.dumps({"schema": "edgedistill.results/1"}))
    with pytest.raises(UsageError) as older:
        res.load_results(p)
    assert "re-run `edgedistill bench`" in older.value.hint
    p.write_text("{truncated")
    with pytest.raises(UsageError, match="not a JSON results file"):
        res.load_results(p)
