"""benchmarks/active_labels.py: the quick mode runs the whole procedure and prints parseable figures.

No performance assertion: whether ranked labels beat random ones is what the script measures.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("active_labels", ROOT / "benchmarks" / "active_labels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


active_labels = _load_script()
NUMBER = r"[-+]?\d+\.\d+"


def test_quick_run_prints_both_arms_and_writes_the_suggestions(tmp_path, capsys):
    assert active_labels.main(["--quick", "--csv-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    figures = {}
    for key, label in (("ranked", r"\+ \d+ labels, top-ranked"), ("random", r"\+ \d+ labels, random"),
                       ("diff", r"ranked - random \(pt\)")):
        m = re.search(rf"^{label}\s+({NUMBER})\s+({NUMBER})\s*$", out, re.MULTILINE)
        assert m, (label, out)
        seed0, mean = float(m[1]), float(m[2])
        assert seed0 == mean  # one seed: its value is the mean
        figures[key] = seed0
    assert 0 <= figures["ranked"] <= 100 and 0 <= figures["random"] <= 100
    assert figures["diff"] == pytest.approx(figures["ranked"] - figures["random"], abs=0.011)
    suggested = tmp_path / "seed0" / "suggested.csv"
    with open(suggested, newline="") as f:
        rows = list(csv.DictReader(f))
    n = round(active_labels.LABEL_SHARE * active_labels.QUICK["pool_size"])
    assert len(rows) == n and f"+ {n} labels, top-ranked" in out
    assert len({r["index"] for r in rows}) == n  # distinct rows of the pool file


@pytest.mark.parametrize("argv", [["--seeds", "0", "0"], ["--epochs", "0"], ["--start-share", "1.5"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        active_labels.main(argv)
    assert exc.value.code == 2 and "--" in capsys.readouterr().err
