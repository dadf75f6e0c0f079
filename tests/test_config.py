import math

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
    p = write(tmp_path, "[distill]\ntemprature = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "distill.temprature" in e.value.message
    assert "distill.temperature" in e.value.hint
    assert e.value.exit_code == EXIT_USAGE


def test_unknown_budget_key_in_target(tmp_path):
    p = write(tmp_path, 'name = "t"\n[budgets]\np99_latnecy_ms = 3\n', "t.toml")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert "budgets.p99_latnecy_ms" in e.value.message


def test_key_at_wrong_level(tmp_path):
    p = write(tmp_path, 'name = "t"\np90_ms = 3\n', "t.toml")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert "unknown key 'p90_ms'" in e.value.message


def test_duplicate_key_is_an_error(tmp_path):
    p = write(tmp_path, "[distill]\nepochs = 3\nepochs = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


@pytest.mark.parametrize("value, needle", [('"10ms"', "p90_ms"), ("-1.0", "greater than 0"), ("nan", "finite")])
def test_bad_budget_values(tmp_path, value, needle):
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
    assert et.cold_start_ms > ort.cold_start_ms
    assert ort.p90_ms == et.p90_ms


def test_missing_target_lists_shipped_profiles(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_target(tmp_path / "nope.toml")
    assert "local-cpu" in e.value.hint


def test_budget_override_keeps_unset_fields():
    b = BudgetTable(p90_ms=2, memory_mb=10, overrides={"x": {"memory_mb": 99}})
    assert b.for_backend("x").p90_ms == 2 and b.for_backend("x").memory_mb == 99
    assert not math.isnan(b.for_backend("y").memory_mb)
