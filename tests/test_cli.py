"""The CLI's contract: fast help, lazy runtimes, one-line errors with documented exit codes."""

import json
import subprocess
import sys

from conftest import run_cli

RUNTIMES = ("torch", "onnxruntime", "openvino", "executorch", "tensorrt", "nncf", "numpy")


def test_help_imports_no_runtime():
    code = ("import sys; from edgedistill.cli import cli; "
            "import edgedistill.backends.base, edgedistill.config; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {RUNTIMES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_has_help_with_an_example():
    for cmd in ("compress", "distill", "export", "bench", "gate", "report", "doctor"):
        r = run_cli([cmd, "--help"])
        assert r.returncode == 0, r.stderr
        assert "Example" in r.stdout, cmd


def test_version():
    from edgedistill import __version__

    r = run_cli(["--version"])
    assert r.returncode == 0 and __version__ in r.stdout


def test_unknown_config_key_exits_2_with_hint_and_no_traceback(tmp_path):
    (tmp_path / "edgedistill.toml").write_text("[distill]\nepochz = 3\n")
    r = run_cli(["compress"], cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown key 'distill.epochz'" in r.stderr and "did you mean 'distill.epochs'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing half-written


def test_unknown_backend_exits_2(tmp_path):
    r = run_cli(["compress", "--backend", "onnxruntim"], cwd=tmp_path)
    assert r.returncode == 2 and "did you mean 'onnxruntime'" in r.stderr and "Traceback" not in r.stderr


def test_missing_weights_file_exits_2(tmp_path):
    r = run_cli(["distill", "--teacher-weights", tmp_path / "nope.safetensors"], cwd=tmp_path)
    assert r.returncode == 2 and "nope.safetensors" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli(["--debug", "compress", "--backend", "nope"], cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_gate_on_missing_results_file_exits_2(tmp_path):
    r = run_cli(["gate", tmp_path / "results.json"])
    assert r.returncode == 2 and "results file not found" in r.stderr


def test_doctor_lists_every_backend_and_why_tensorrt_is_not_usable():
    r = run_cli(["doctor", "--json"])
    assert r.returncode == 0, r.stderr
    rows = {row["backend"]: row for row in json.loads(r.stdout)}
    from edgedistill.backends.base import BACKENDS

    assert set(rows) == set(BACKENDS) >= {"onnxruntime", "openvino", "executorch", "tensorrt", "ort-mobile", "coreml"}
    assert rows["onnxruntime"]["usable"] and rows["onnxruntime"]["version"]
    if not rows["tensorrt"]["usable"]:
        assert rows["tensorrt"]["reason"] and rows["tensorrt"]["extra"] == "tensorrt"


def test_doctor_table_prints_the_extra_in_brackets_literally():
    """"edgedistill[litert]" in the fix column is text: rich markup would drop "[litert]"."""
    import io

    from rich.console import Console

    from edgedistill.report.table import print_doctor

    out = io.StringIO()
    print_doctor([{"backend": "litert", "usable": False, "version": None, "extra": "litert",
                   "reason": "ai-edge-litert is not installed (pip install 'edgedistill[litert]')"}],
                 Console(file=out, width=200))
    assert "pip install 'edgedistill[litert]'" in out.getvalue() and "(extra: edgedistill[litert])" in out.getvalue()


def test_messages_with_brackets_are_printed_literally(capsys):
    """User text in progress lines ("[teacher]", a path like "[/abs]") is not rich markup: it
    neither vanishes nor crashes the run, and CI logs keep long lines whole."""
    from edgedistill.ui import UI

    ui = UI()
    ui.step("set [teacher] allow_weak_teacher in [/abs]/edgedistill.toml")
    ui.note("weights sha256 " + "ab" * 32 + " of [bold]x")
    err = capsys.readouterr().err
    assert "set [teacher] allow_weak_teacher in [/abs]/edgedistill.toml" in err
    assert "ab" * 32 + " of [bold]x" in err
