"""Pruning of the distilled student: torch-pruning's dependency graph, per-layer ratios, Taylor
importance, a plan that rebuilds the architecture, and the stage with its recovery fine-tune."""

import json

import pytest
import torch
from torch import nn

from edgedistill.compress.prune import check_layers, form_name, prunable_layers, prune, replay
from edgedistill.errors import UsageError
from tests.conftest import run_cli


class Residual(nn.Module):
    """Two convolutions added to their input (a ResNet block) and a grouped convolution: the
    channels on both sides of the add, and a grouped layer's groups, must be pruned together."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.bn(self.a(x))))
        return self.head(x.mean(dim=(2, 3)))


EXAMPLE = torch.zeros(1, 1, 8, 8)


def _model(seed=0):
    torch.manual_seed(seed)
    return Residual().eval()


def test_pruning_a_residual_block_keeps_both_sides_of_the_add_consistent():
    model = _model()
    p = prune(model, EXAMPLE, ratio=0.5, layers={})
    out = p.model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)  # the classifier's outputs are the classes: never pruned
    # The add couples stem and b: one channel count for both, and a's (inside the block) halved too.
    assert p.model.stem.out_channels == p.model.b.out_channels == p.model.head.in_features == 8
    assert p.model.a.out_channels == p.model.bn.num_features == 8
    assert p.model.b.groups == 4 and p.model.b.weight.shape[1] * 4 == p.model.a.out_channels
    assert p.params_after < 0.4 * p.params_before and p.macs_after < 0.4 * p.macs_before
    assert model.stem.out_channels == 16  # the input model is left as it was


def test_the_plan_rebuilds_the_pruned_architecture_for_its_weights():
    model = _model()
    p = prune(model, EXAMPLE, ratio=0.5, layers={})
    plan = json.loads(json.dumps(p.plan))  # what the stage stores: JSON, nothing to unpickle
    rebuilt = replay(model, EXAMPLE, plan)
    rebuilt.load_state_dict(p.model.state_dict())  # strict: every shape must match
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), p.model(x))


def test_per_layer_ratios_prune_only_the_named_layer():
    p = prune(_model(), EXAMPLE, ratio=None, layers={"a": 0.75})
    assert p.model.a.out_channels == p.model.bn.num_features == 4
    assert p.model.stem.out_channels == p.model.b.out_channels == 16  # not named: untouched


def test_taylor_importance_prunes_the_channels_the_loss_does_not_need():
    """Channel 0 of `a` has by far the largest weights but nothing reads it (its BatchNorm scale
    is 0): magnitude keeps it, Taylor (|weight x gradient|, the gradient being 0) removes it."""
    model = _model()
    with torch.no_grad():
        model.a.weight[0] *= 100
        model.bn.weight[0] = 0
        model.bn.bias[0] = 0
    x = torch.randn(16, 1, 8, 8)

    def loss(m):
        return m(x).logsumexp(dim=1).mean()

    kept_by = {}
    for importance in ("magnitude", "taylor"):
        p = prune(model, EXAMPLE, ratio=None, layers={"a": 0.5}, importance=importance, loss=loss)
        removed = next(s["idxs"] for s in p.plan if s["module"] == "a")
        kept_by[importance] = 0 not in removed
    assert kept_by == {"magnitude": True, "taylor": False}


def test_an_unknown_layer_is_refused_with_the_prunable_ones_listed():
    model = _model()
    assert prunable_layers(model) == ["stem", "a", "b"]  # the classifier is not prunable
    with pytest.raises(UsageError) as e:
        check_layers(model, {"blocks.0.conv": 0.5})
    assert "'blocks.0.conv'" in str(e.value) and "prunable: stem, a, b" in str(e.value)
    with pytest.raises(UsageError, match="not a prunable layer"):
        prune(model, EXAMPLE, ratio=None, layers={"head": 0.5})


def test_form_names_are_stable_and_tell_forms_apart():
    assert form_name(0.5, {}) == "prune0.5"
    assert form_name(None, {"a": 0.5}) != form_name(None, {"a": 0.25})
    assert form_name(None, {"a": 0.5}) == form_name(None, {"a": 0.5})


@pytest.mark.parametrize("toml, found", [
    ("ratio = 1.0", "less than 1"),
    ("ratio = 0", "greater than 0"),
    ('layers = {"0" = 1.5}', "less than 1"),
    ("importance = \"random\"", "magnitude"),
    ("recovery_epochs = 2", "set ratio"),
])
def test_bad_pruning_settings_are_one_line_config_errors(tmp_path, cli_env, toml, found):
    config = tmp_path / "edgedistill.toml"
    config.write_text(f"[compress.prune]\n{toml}\n")
    r = run_cli(["compress", "--config", config, "--out-dir", tmp_path / "runs"], env=cli_env)
    assert r.returncode == 2, r.stderr
    assert found in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_an_unknown_layer_fails_before_any_training(tmp_path, cli_env):
    config = tmp_path / "edgedistill.toml"
    config.write_text('[compress.prune]\nlayers = {"features.3" = 0.5}\n')
    r = run_cli(["compress", "--config", config, "--out-dir", tmp_path / "runs", "--run-name", "r"], env=cli_env)
    assert r.returncode == 2, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "'features.3'" in error[0] and "prunable: 0, 4, 7, 11" in error[0]
    assert not (tmp_path / "runs" / "r" / "distill" / "manifest.json").exists()


def test_the_report_gives_each_pruned_artifact_against_the_unpruned_one():
    from edgedistill.api import speedups
    from edgedistill.report.markdown import pruning_facts

    def result(name, p50, top1, form=None):
        return {"artifact": name, "role": "student", "precision": "fp32", "backend": "onnxruntime", "form": form,
                "warm": {"summary": {"p50_ms": p50}}, "accuracy": {"top1": top1}}

    results = {"reference": {}, "targets": [{"name": "cpu", "results": [
        result("student-fp32-onnxruntime", 0.6, 0.96), result("student-prune0.5-fp32-onnxruntime", 0.3, 0.955, "prune0.5")]}]}
    assert speedups(results) == ["cpu: student-prune0.5-fp32-onnxruntime p50 0.300 ms vs unpruned 0.600 ms "
                                 "(0.50x of it), top-1 95.50% vs 96.00%"]
    pruning = {"form": "prune0.5", "importance": "taylor", "recovery_epochs": 8, "score": "val_acc",
               "params_before": 1000, "params_after": 250, "macs_before": 4e6, "macs_after": 1e6,
               "val_before": 0.98, "val_pruned": 0.5, "val_after": 0.975}
    (label, text), = pruning_facts({"distill": {"pruning": pruning}})
    assert "taylor" in label and "params 1,000 -> 250 (25.0%)" in text and "97.50% after recovery" in text
