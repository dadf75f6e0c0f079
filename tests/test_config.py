import math
import re
from pathlib import Path

import pytest

from edgedistill.config import BudgetTable, load_config, load_target
from edgedistill.errors import EXIT_USAGE, ConfigError


def write(tmp_path, text, name="edgedistill.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_valid():
    cfg = load_config(None)
    assert cfg.data.spec == "builtin:digits"
    assert cfg.export.backends == ["onnxruntime", "openvino", "executorch"]


def test_unknown_key_gets_did_you_mean(tmp_path):
    """RELIABILITY 7: an unknown key names its path and the key meant."""
    p = write(tmp_path, "[distill]\ntemprature = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "distill.temprature" in e.value.message
    assert "distill.temperature" in e.value.hint
    assert e.value.exit_code == EXIT_USAGE


def test_unknown_budget_key_in_target(tmp_path):
    """RELIABILITY 7: `p99_latnecy_ms` in a target's budgets."""
    p = write(tmp_path, 'name = "t"\n[budgets]\np99_latnecy_ms = 3\n', "t.toml")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert "budgets.p99_latnecy_ms" in e.value.message


def test_key_at_wrong_level(tmp_path):
    """RELIABILITY 7: a budget at the top level of a target, not in [budgets]."""
    p = write(tmp_path, 'name = "t"\np90_ms = 3\n', "t.toml")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert "unknown key 'p90_ms'" in e.value.message
    assert e.value.hint == "did you mean 'budgets.p90_ms'?"


def test_duplicate_key_is_an_error(tmp_path):
    """RELIABILITY 7: a duplicate key is not last-one-wins."""
    p = write(tmp_path, "[distill]\nepochs = 3\nepochs = 4\n")
    with pytest.raises(ConfigError, match=r"not valid TOML: Cannot overwrite a value \(at line 3"):
        load_config(p)


@pytest.mark.parametrize("value, needle", [('"10ms"', "p90_ms"), ("-1.0", "greater than 0"), ("nan", "finite")])
def test_bad_budget_values(tmp_path, value, needle):
    """RELIABILITY 7: "10ms", negative and NaN budgets."""
    p = write(tmp_path, f'name = "t"\n[budgets]\np90_ms = {value}\n', "t.toml")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert needle in e.value.message


def test_cli_style_overrides_apply_and_validate():
    cfg = load_config(None, {"distill.epochs": 3, "export.backends": ["onnxruntime"], "run.name": None})
    assert cfg.distill.epochs == 3 and cfg.export.backends == ["onnxruntime"] and cfg.run.name == "default"
    with pytest.raises(ConfigError, match="distill.epochs"):
        load_config(None, {"distill.epochs": 0})


def test_shipped_target_by_name_and_backend_overrides():
    t = load_target("local-cpu")
    assert t.name == "local-cpu" and t.threads >= 1
    et = t.budgets.for_backend("executorch")
    ort = t.budgets.for_backend("onnxruntime")
    assert et.memory_mb > ort.memory_mb  # the override applies to its backend only
    assert ort.p90_ms == et.p90_ms and et.cold_start_ms == ort.cold_start_ms


def test_missing_target_lists_shipped_profiles(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_target(tmp_path / "nope.toml")
    assert "local-cpu" in e.value.hint


def test_budget_override_keeps_unset_fields():
    b = BudgetTable(p90_ms=2, memory_mb=10, overrides={"openvino": {"memory_mb": 99}})
    assert b.for_backend("openvino").p90_ms == 2 and b.for_backend("openvino").memory_mb == 99
    assert b.for_backend("onnxruntime").memory_mb == 10 and not math.isnan(b.for_backend("onnxruntime").memory_mb)


# ---------------------------------------------------------------- issue 9: front doors that cannot be fooled


def invoke(args, cwd):
    """`edgedistill ARGS` in-process (CliRunner), from `cwd`."""
    import os

    from click.testing import CliRunner

    from edgedistill.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_error(result, *expected):
    """Exit 2, one `error:` line (plus an optional hint) holding each `expected` text."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("  hint: ") for line in lines[1:]), result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    return lines


@pytest.mark.parametrize("name", ["/abs", "../x", "a/b", ".hidden", "..", "", "x" * 101, "a\\b", "a b", "run\x00"])
def test_reliability_28_run_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path, name):
    """RELIABILITY 28: --run-name /abs, ../x, a/b, .hidden: exit 2, and nothing is created under
    --out-dir or beside it."""
    if name == "/abs":
        name = str(tmp_path / "abs-target")  # absolute, and inside tmp_path so the check can see it
    work = tmp_path / "work"
    work.mkdir()
    result = invoke(["distill", "--run-name", name, "--out-dir", work / "runs", "--epochs", "1", "-q"], work)
    assert_one_error(result, "run.name", "a name of a folder under out_dir, not a path")
    assert tree(tmp_path) == ["work"]


@pytest.mark.parametrize("name", ["default", "nightly-2026.12.01", "a_b", "A1", "x" * 100, "v1.0"])
def test_reliability_28_plain_run_names_are_accepted(name):
    """RELIABILITY 28: the rule refuses paths, not names."""
    assert load_config(None, {"run.name": name}).run.name == name


def test_reliability_28_run_name_is_checked_by_every_front_door(tmp_path):
    """RELIABILITY 28: the model itself refuses the name, so TOML, flags and the API all do."""
    from pydantic import ValidationError

    from edgedistill.config import Config, RunConfig

    with pytest.raises(ConfigError, match=r"run\.name.*not a path"):
        load_config(write(tmp_path, '[run]\nname = "../x"\n'))
    with pytest.raises(ConfigError, match=r"found '\.\./x'"):
        load_config(write(tmp_path, '[run]\nname = "../x"\n'))
    with pytest.raises(ConfigError, match=r"run\.name.*not a path"):
        load_config(None, {"run.name": "/etc"})
    with pytest.raises(ValidationError):
        Config(run={"name": "a/b"})
    run = RunConfig()
    with pytest.raises(ValidationError):  # validate_assignment: no way around it
        run.name = "../../x"


@pytest.mark.parametrize("link", ["evil", "evil/distill", ".cache"])
def test_reliability_28_symlink_leading_out_of_out_dir_is_refused(tmp_path, link):
    """RELIABILITY 28: a derived path that is a symlink out of --out-dir (the run folder, a stage
    folder inside it, the teacher cache): exit 2 before anything is written, outside untouched."""
    outside, runs = tmp_path / "outside", tmp_path / "runs"
    outside.mkdir()
    (runs / link).parent.mkdir(parents=True, exist_ok=True)
    (runs / link).symlink_to(outside, target_is_directory=True)
    before = tree(runs)
    result = invoke(["distill", "--run-name", "evil", "--out-dir", runs, "--epochs", "1", "-q"], tmp_path)
    assert_one_error(result, "leads outside run.out_dir", str(outside))
    assert list(outside.iterdir()) == [] and tree(runs) == before


@pytest.mark.parametrize("text, file", [('name = "../../x"\n', "t.toml"), ('name = "/abs"\n', "t.toml"),
                                        ("", "my target.toml"), ("", ".hidden.toml")])
def test_reliability_28_target_name_is_a_folder_name(tmp_path, text, file):
    """RELIABILITY 28: a target's name becomes runs/<run>/bench/<target>, so it is a name too
    (one given in the file, or the file's stem by default: then the hint says how to set one)."""
    path = write(tmp_path, text + "threads = 1\n", file)
    with pytest.raises(ConfigError) as e:
        load_target(path)
    assert f"{path}: name: a name of a folder under out_dir, not a path" in e.value.message
    assert (text != "") == (e.value.hint is None)
    work = tmp_path / "work"
    work.mkdir()
    result = invoke(["distill", "--target", path, "--out-dir", work / "runs", "--epochs", "1", "-q"], work)
    assert_one_error(result, "name: a name of a folder under out_dir")
    assert list(work.iterdir()) == []


def test_reliability_28_symlink_that_stays_inside_out_dir_is_fine(tmp_path):
    """RELIABILITY 28: only links that leave --out-dir are refused."""
    from edgedistill.config import RunConfig, checked_run_dir

    runs = tmp_path / "runs"
    (runs / "real").mkdir(parents=True)
    (runs / "alias").symlink_to(runs / "real", target_is_directory=True)
    assert checked_run_dir(RunConfig(name="alias", out_dir=runs)) == runs / "alias"
    assert checked_run_dir(RunConfig(name="new", out_dir=runs)) == runs / "new"


def test_reliability_28_out_dir_that_is_a_file_is_refused(tmp_path):
    """RELIABILITY 28: a file where the run folder would go is exit 2, not an internal error later."""
    (tmp_path / "runs").write_text("not a folder")
    result = invoke(["distill", "--out-dir", tmp_path / "runs", "--epochs", "1", "-q"], tmp_path)
    assert_one_error(result, "expected a folder, found a file")


def target_file(tmp_path, text):
    return write(tmp_path, 'name = "t"\n' + text, "t.toml")


@pytest.mark.parametrize("text, path, suggestion", [
    ("[budgets.overrides.onnxruntim]\np90_ms = 1\n", "budgets.overrides.onnxruntim", "budgets.overrides.onnxruntime"),
    ("[budgets.overrides.OpenVINO]\np90_ms = 1\n", "budgets.overrides.OpenVINO", "budgets.overrides.openvino"),
    ('backends = ["onnxruntime", "openvno"]\n', "backends.1", "openvino"),
])
def test_reliability_7_keyed_tables_of_a_target_take_known_keys_only(tmp_path, text, path, suggestion):
    """RELIABILITY 7 (issue 9 finding 7): an override for a misspelt backend was silently ignored,
    so the budget never applied; now it is an error naming the key and the backend meant."""
    with pytest.raises(ConfigError) as e:
        load_target(target_file(tmp_path, text))
    assert path in e.value.message and "onnxruntime, openvino, executorch, tensorrt" in e.value.message
    assert e.value.hint == f"did you mean {suggestion!r}?"


def test_reliability_7_override_keys_are_the_backend_registry():
    """RELIABILITY 7: the keys allowed are exactly edgedistill.backends.base.BACKENDS."""
    from edgedistill.backends.base import BACKENDS

    for name in BACKENDS:
        assert BudgetTable(overrides={name: {"p90_ms": 1}}).for_backend(name).p90_ms == 1
    with pytest.raises(ConfigError, match="unknown key 'budgets.overrides.tflite'"):
        validate_target({"budgets": {"overrides": {"tflite": {}}}})


def validate_target(data):
    from edgedistill.config import TargetConfig, validate

    return validate(TargetConfig, {"name": "t", **data}, "t.toml")


@pytest.mark.parametrize("text, needle, hint", [
    ("[export.min_top1_agreement]\nfp3 = 0.9\n", "unknown key 'export.min_top1_agreement.fp3'",
     "did you mean 'export.min_top1_agreement.fp32'?"),
    ("[export.min_cosine]\nint4 = 0.9\n", "unknown key 'export.min_cosine.int4'", "did you mean 'export.min_cosine.int8'?"),
    ('[export]\nbackends = ["onnxruntim"]\n', "export.backends.0: expected one of onnxruntime", "did you mean 'onnxruntime'?"),
    ('[compress]\nprecisions = ["fp33"]\n', "compress.precisions.0: expected one of fp32, fp16, int8", "did you mean 'fp32'?"),
])
def test_reliability_7_keyed_tables_and_lists_of_a_config_take_known_names_only(tmp_path, text, needle, hint):
    """RELIABILITY 7 (finding 7): precision keys and backend lists are checked at config load."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in e.value.message and e.value.hint == hint


def test_reliability_7_unknown_backend_flag_is_a_config_error():
    """RELIABILITY 7: --backend goes through the same model as the TOML list."""
    with pytest.raises(ConfigError, match=r"export\.backends\.1.*found 'openvin'") as e:
        load_config(None, {"export.backends": ["onnxruntime", "openvin"]})
    assert e.value.hint == "did you mean 'openvino'?"


@pytest.mark.parametrize("text, needle", [
    ("[export.min_top1_agreement]\nfp32 = 1.5\n", "export.min_top1_agreement.fp32: Input should be less than or equal to 1"),
    ("[export.min_top1_agreement]\nint8 = -0.1\n", "export.min_top1_agreement.int8: Input should be greater than or equal to 0"),
    ("[export.min_cosine]\nfp16 = 2\n", "export.min_cosine.fp16: Input should be less than or equal to 1"),
    ("[export.min_cosine]\nfp16 = nan\n", "export.min_cosine.fp16: Input should be a finite number"),
    ("[run]\nseed = -1\n", "run.seed: Input should be greater than or equal to 0"),
])
def test_reliability_7_config_ranges(tmp_path, text, needle):
    """RELIABILITY 7 (finding 7): agreement and cosine thresholds lie in [0, 1]."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("text, needle", [
    ("[budgets]\naccuracy_drop_pt = 100.5\n", "budgets.accuracy_drop_pt: Input should be less than or equal to 100"),
    ("[budgets]\naccuracy_drop_pt = -1\n", "budgets.accuracy_drop_pt: Input should be greater than or equal to 0"),
    ("[budgets.overrides.openvino]\naccuracy_drop_pt = 150\n", "budgets.overrides.openvino.accuracy_drop_pt"),
    ("[budgets]\nsize_mb = inf\n", "budgets.size_mb: Input should be a finite number"),
    ("threads = 100000\n", "threads: Input should be less than or equal to 4096"),
])
def test_reliability_7_target_ranges(tmp_path, text, needle):
    """RELIABILITY 7 (finding 7): an accuracy drop is at most 100 points; inf/NaN/negative refused."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_target(target_file(tmp_path, text))


@pytest.mark.parametrize("text, needle, hint", [
    ('[budgets]\np90_ms = "10"\n', "budgets.p90_ms: Input should be a valid number, found '10'", "without quotes or units"),
    ('[budgets]\np90_ms = "10ms"\n', "found '10ms'", "without quotes or units"),
    ("[budgets]\nsize_mb = true\n", "budgets.size_mb: Input should be a valid number, found True", "not true or false"),
    ("threads = true\n", "threads: Input should be a valid integer, found True", "not true or false"),
    ("threads = 1.5\n", "threads: Input should be a valid integer", None),
    ('allow_fallback = "yes"\n', "allow_fallback: Input should be a valid boolean, found 'yes'", "true or false"),
])
def test_reliability_7_numbers_must_be_numbers(tmp_path, text, needle, hint):
    """RELIABILITY 7 (finding 7): strict mode: "10" is not coerced to 10.0, true is not 1."""
    with pytest.raises(ConfigError) as e:
        load_target(target_file(tmp_path, text))
    assert needle in e.value.message
    assert (hint is None) or (hint in e.value.hint)


def test_strict_mode_keeps_ints_for_floats_and_strings_for_paths(tmp_path):
    """The strict-mode pitfalls: TOML `p90_ms = 2` is a float budget of 2.0, and paths (which TOML
    can only write as strings) are still taken, in the config, the target and from flags."""
    t = load_target(target_file(tmp_path, "[budgets]\np90_ms = 2\n[budgets.overrides.executorch]\ncold_start_ms = 100\n"))
    assert t.budgets.p90_ms == 2.0 and isinstance(t.budgets.p90_ms, float)
    assert t.budgets.for_backend("executorch").cold_start_ms == 100.0
    cfg = load_config(write(tmp_path, '[teacher]\nweights = "t.safetensors"\n[student]\nweights = "s.pt"\n'
                                      '[run]\nout_dir = "out"\n[bench]\ntargets = ["a.toml", "local-cpu"]\n'
                                      "[distill]\nlr = 1\n"))
    assert cfg.teacher.weights == Path("t.safetensors") and cfg.student.weights == Path("s.pt")
    assert cfg.run.out_dir == Path("out") and cfg.bench.targets == [Path("a.toml"), Path("local-cpu")]
    assert cfg.distill.lr == 1.0
    flags = load_config(None, {"teacher.weights": Path("w.safetensors"), "run.out_dir": "o",
                               "bench.targets": [Path("x.toml")]})
    assert flags.teacher.weights == Path("w.safetensors") and flags.run.out_dir == Path("o")
    with pytest.raises(ConfigError, match=r"teacher\.weights: expected a path \(a string\), found 3"):
        load_config(write(tmp_path, "[teacher]\nweights = 3\n"))


@pytest.mark.parametrize("text, key, suggestion", [
    ("epochs = 3\n", "'epochs'", "did you mean 'distill.epochs'?"),
    ("[run]\nlr = 0.1\n", "'run.lr'", "did you mean 'distill.lr'?"),
    ('weights = "w.safetensors"\n', "'weights'", "did you mean 'teacher.weights' or 'student.weights'?"),
    ("[student]\nallow_weak_teacher = true\n", "'student.allow_weak_teacher'", "did you mean 'teacher.allow_weak_teacher'?"),
    ("[distill]\nepoch = 3\n", "'distill.epoch'", "did you mean 'distill.epochs'?"),  # a typo where it belongs
    ("[bench]\ntarget = []\n", "'bench.target'", "did you mean 'bench.targets'?"),
    ("temperatur = 3\n", "'temperatur'", "did you mean 'distill.temperature'?"),  # both: a typo at the wrong level
])
def test_reliability_7_key_at_the_wrong_level_names_its_section(tmp_path, text, key, suggestion):
    """RELIABILITY 7 (issue 9 finding 11a): a top-level `epochs = 3` said "did you mean 'bench'?";
    a key that is a field of another section now names that section's full path."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert f"unknown key {key}" in e.value.message
    assert e.value.hint == suggestion


def test_reliability_7_target_key_at_the_wrong_level(tmp_path):
    """RELIABILITY 7 (finding 11a): a budget written at the top of a target names [budgets]."""
    with pytest.raises(ConfigError) as e:
        load_target(target_file(tmp_path, "p90_ms = 3\ncold_runs = 3\n"))
    assert "unknown key 'p90_ms'" in e.value.message
    assert e.value.hint == "did you mean 'budgets.p90_ms'?"


def test_reliability_7_bad_config_stops_before_any_model_is_loaded(tmp_path):
    """RELIABILITY 7: through the CLI, a bad key is exit 2 before the teacher's module is imported
    (the module writes a marker file when imported)."""
    (tmp_path / "marker_teacher.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('imported').touch()\ndef make():\n    raise SystemExit(9)\n")
    for text in ("[distill]\nepochs = 3\nepochs = 4\n", '[teacher]\nspec = "marker_teacher:make"\n[budgets]\np90_ms = 1\n',
                 '[teacher]\nspec = "marker_teacher:make"\n[distill]\nepochs = "3"\n',
                 '[teacher]\nspec = "marker_teacher:make"\nepochs = 3\n'):
        cfg = write(tmp_path, text)
        result = invoke(["distill", "-c", cfg, "--out-dir", tmp_path / "runs", "-q"], tmp_path)
        assert_one_error(result, str(cfg))
        assert not (tmp_path / "imported").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- finding 8: files that are not what they say


@pytest.mark.parametrize("content, found", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "found binary data"),
    ("[distill]\nepochs = 3 # d\xe9j\xe0\n".encode("latin-1"), "found bytes that are not UTF-8"),
])
@pytest.mark.parametrize("which", ["config", "target"])
def test_finding_8_binary_or_non_utf8_file_is_a_config_error(tmp_path, content, found, which):
    """Finding 8: a binary or non-UTF-8 config or target file was an internal error
    (UnicodeDecodeError, exit 3); now exit 2 naming the file and what was found."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    flag = ["-c", bad] if which == "config" else ["--target", bad]
    result = invoke(["bench", *flag, "--out-dir", tmp_path / "runs", "-q"], tmp_path)
    assert_one_error(result, str(bad), f"expected a UTF-8 TOML {which} file", found)


@pytest.mark.parametrize("which", ["config", "target"])
def test_finding_8_directory_given_as_config_or_target(tmp_path, which):
    """Finding 8: a directory is not "not found": it says a file was expected."""
    folder = tmp_path / "conf.toml"
    folder.mkdir()
    flag = ["-c", folder] if which == "config" else ["--target", folder]
    result = invoke(["bench", *flag, "--out-dir", tmp_path / "runs", "-q"], tmp_path)
    assert_one_error(result, str(folder), f"expected a TOML {which} file, found a directory")


@pytest.mark.parametrize("text, flag, table", [
    ("distill = 3\n", ["--epochs", "2"], "distill"),
    ('teacher = "x"\n', ["--teacher-weights", "w.safetensors"], "teacher"),
    ("run = [1, 2]\n", ["--run-name", "r"], "run"),
    ("bench = true\n", ["--cold-disk"], "bench"),
])
def test_finding_8_scalar_where_a_table_is_expected_with_a_flag_inside_it(tmp_path, text, flag, table):
    """Finding 8: `distill = 3` in the TOML plus --epochs 2 crashed the override loop (exit 3)."""
    cfg = write(tmp_path, text)
    result = invoke(["bench", "-c", cfg, *flag, "--out-dir", tmp_path / "runs", "-q"], tmp_path)
    assert_one_error(result, str(cfg), f"{table}: expected a table, found")


def test_finding_8_scalar_where_a_table_is_expected_without_a_flag(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "distill = 3\n"))
    assert "distill: expected a table, found an integer (3)" in e.value.message


def test_error_line_stays_short_for_huge_values(tmp_path):
    """RELIABILITY 7: a huge number or a pasted blob is cut short in the one error line."""
    with pytest.raises(ConfigError) as e:
        load_target(target_file(tmp_path, f"[budgets]\np90_ms = {10**400}\n"))
    assert "budgets.p90_ms: Input should be a valid number" in e.value.message
    assert "(401 characters)" in e.value.message and len(e.value.message) < 200
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f'"{"k" * 5000}" = 1\n'))
    assert "unknown key 'kkk" in e.value.message and len(e.value.message) < 200


@pytest.mark.parametrize("special", ["/dev/null", "fifo"])
def test_finding_8_device_or_pipe_as_config_is_refused_without_reading(tmp_path, special):
    """Finding 8: a pipe would block the read forever; a device is not a config either."""
    import os

    if special == "fifo":
        special = tmp_path / "fifo.toml"
        os.mkfifo(special)
    with pytest.raises(ConfigError, match="found a device, pipe or socket"):
        load_config(Path(special))
    with pytest.raises(ConfigError, match="expected a TOML target file, found a device, pipe or socket"):
        load_target(Path(special))


def test_finding_8_huge_config_is_refused_before_reading(tmp_path):
    from edgedistill.config import MAX_TOML_BYTES

    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(MAX_TOML_BYTES + 1)  # sparse: no real disk used
    with pytest.raises(ConfigError, match=f"found {MAX_TOML_BYTES + 1} bytes"):
        load_config(big)


def test_reliability_28_links_already_inside_the_run_or_cache_are_checked(tmp_path):
    """RELIABILITY 28: a link deep inside an existing run folder or the teacher cache that leads
    out is refused (a stage would write through it); a loop of links is exit 2, not a hang."""
    from edgedistill.config import RunConfig, checked_run_dir

    outside, runs = tmp_path / "outside", tmp_path / "runs"
    outside.mkdir()
    (runs / "r" / "export" / "onnx").mkdir(parents=True)
    (runs / "r" / "export" / "onnx" / "model.onnx").symlink_to(outside / "model.onnx")
    with pytest.raises(ConfigError, match=r"model\.onnx leads outside run\.out_dir"):
        checked_run_dir(RunConfig(name="r", out_dir=runs))
    (runs / ".cache").mkdir()
    (runs / ".cache" / "teacher").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"teacher leads outside run\.out_dir"):
        checked_run_dir(RunConfig(name="fresh", out_dir=runs))
    (runs / ".cache" / "teacher").unlink()
    (runs / "loop").symlink_to(runs / "loop")
    with pytest.raises(ConfigError, match="cannot check where run 'loop' writes"):
        checked_run_dir(RunConfig(name="loop", out_dir=runs))


@pytest.mark.parametrize("text", ["x = " + "[" * 5000 + "]" * 5000, "distill = " + "{a = " * 3000 + "1" + "}" * 3000])
def test_finding_8_deeply_nested_toml(tmp_path, text):
    """Finding 8: nesting deep enough to exhaust Python's recursion is exit 2, not a RecursionError."""
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(write(tmp_path, text))


def test_finding_8_deeply_nested_values_through_the_api():
    """Finding 8: the same through the API, where no TOML parser stands in front."""
    from edgedistill.config import Config, validate

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError):
        validate(Config, {"distill": {"augment": deep}}, "api")


def test_reliability_7_a_bad_flag_value_blames_the_flag_not_the_file(tmp_path):
    """RELIABILITY 7: with a valid edgedistill.toml, `--run-name ../x` or `--backend onnxrt` names
    the flag; a bad value in the file still names the file."""
    cfg = write(tmp_path, '[run]\nname = "fine"\n')
    out = ["--out-dir", tmp_path / "runs"]
    lines = assert_one_error(invoke(["distill", "-c", cfg, "--run-name", "../x", *out], tmp_path), "run.name")
    assert lines[0].startswith("error: --run-name: run.name: a name of a folder")
    lines = assert_one_error(invoke(["distill", "-c", cfg, "--backend", "onnxrt", *out], tmp_path))
    assert lines[0].startswith("error: --backend: export.backends.0: expected one of") and "onnxruntime" in lines[1]
    bad = write(tmp_path, '[run]\nname = "../y"\n', "bad.toml")
    lines = assert_one_error(invoke(["distill", "-c", bad, "--epochs", "2", *out], tmp_path))
    assert lines[0].startswith(f"error: {bad}: run.name:")


def test_reliability_7_error_stays_one_line_when_a_file_name_holds_a_newline(tmp_path):
    """RELIABILITY 7: the error quotes the file name; a newline or a terminal escape in it is
    shown escaped, so the message stays one line and cannot repaint the terminal."""
    cfg = write(tmp_path, "epochs = 3\n", "a\nb\x1b[2J.toml")
    lines = assert_one_error(invoke(["distill", "-c", cfg, "--out-dir", tmp_path / "runs"], tmp_path),
                             "unknown key 'epochs'")
    assert "a\\nb\\x1b[2J.toml" in lines[0] and "\x1b" not in lines[0]


def test_finding_8_folder_named_edgedistill_toml_is_not_silently_ignored(tmp_path):
    """Finding 8: the config read by default from the current folder: a folder by that name is
    exit 2, not a run on the defaults the user did not mean."""
    (tmp_path / "edgedistill.toml").mkdir()
    result = invoke(["distill", "--out-dir", tmp_path / "runs", "-q"], tmp_path)
    assert_one_error(result, "edgedistill.toml: expected a TOML config file, found a directory")


def test_strict_budgets_in_a_results_file_are_a_config_error_not_a_crash():
    """Strict numbers reach the budgets a results file records too: a hand-edited "10" is exit 2
    naming the target and key (it was silently coerced before strict mode; a raw ValidationError,
    exit 3, without this)."""
    from edgedistill.gate import gate_target

    with pytest.raises(ConfigError) as e:
        gate_target({"name": "cpu", "budgets": {"p90_ms": "10"}, "results": []}, {})
    assert "results: target 'cpu': budgets: p90_ms: Input should be a valid number, found '10'" in e.value.message
    assert e.value.exit_code == 2
    with pytest.raises(ConfigError, match="unknown key 'overrides.onnxruntim'"):
        gate_target({"name": "cpu", "budgets": {"overrides": {"onnxruntim": {}}}, "results": []}, {})


def test_the_cache_lives_under_out_dir_unless_edgedistill_cache_dir_says_otherwise(tmp_path, monkeypatch):
    from edgedistill.config import CACHE_DIR_ENV, RunConfig, cache_dir

    run = RunConfig(name="r", out_dir=tmp_path / "runs")
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert cache_dir(run) == tmp_path / "runs" / ".cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "shared"))
    assert cache_dir(run) == tmp_path / "shared"
