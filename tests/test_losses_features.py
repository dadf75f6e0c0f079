"""Embedding and feature (hint) losses, forward-hook taps, shape adapters, and their config."""

import math

import pytest
import torch
from torch import nn

from edgedistill.config import FeaturePair, load_config
from edgedistill.distill.features import FeatureTaps, adapter_key, build_adapters
from edgedistill.distill.losses import embedding_loss, feature_loss
from edgedistill.errors import EXIT_USAGE, ConfigError, UsageError


class Named(nn.Module):
    """Dotted paths like a real model's: body.N and head."""

    def __init__(self, widths, hidden=16):
        super().__init__()
        c1, c2 = widths
        self.body = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c2, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.pool(self.body(x)))))


# ---------------------------------------------------------------- losses: values


def test_embedding_loss_values_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # MSE: sample 1 (1 + 1) / 2 = 1, sample 2 (0 + 1) / 2 = 0.5 -> mean 0.75.
    # 1 - cos: sample 1 orthogonal -> 1, sample 2 parallel -> 0 -> mean 0.5.
    out = embedding_loss(s, t, mse_weight=2.0, cosine_weight=3.0)
    assert out.mse.item() == pytest.approx(0.75)
    assert out.cosine.item() == pytest.approx(0.5)
    assert out.total.item() == pytest.approx(2 * 0.75 + 3 * 0.5)
    zero = embedding_loss(t.clone(), t, 1.0, 1.0)
    assert zero.total.item() == pytest.approx(0.0, abs=1e-7)


def test_embedding_loss_shape_mismatch_is_a_usage_error():
    with pytest.raises(UsageError, match=r"student \[2, 3\] vs teacher \[2, 4\]") as e:
        embedding_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0, 1.0)
    assert e.value.exit_code == EXIT_USAGE


def test_feature_loss_values_by_hand():
    # No pairs: a zero loss.
    adapters = build_adapters(nn.Linear(2, 3), nn.Linear(2, 3), [], torch.zeros(1, 2))
    assert len(adapters) == 0 and feature_loss({}, {}, adapters).total.item() == 0.0
    # Identity adapters (equal shapes): loss = Σ w · MSE.
    a, b = Named((4, 8)), Named((4, 8))
    pairs = [FeaturePair(student="fc", teacher="fc", weight=2.0),
             FeaturePair(student="body.0", teacher="body.0", weight=0.5)]
    adapters = build_adapters(a, b, pairs, torch.zeros(2, 1, 8, 8))
    sf = {"fc": torch.tensor([[1.0, 2.0] + [0.0] * 14]), "body.0": torch.ones(1, 4, 4, 4)}
    tf = {"fc": torch.zeros(1, 16), "body.0": torch.zeros(1, 4, 4, 4)}
    out = feature_loss(sf, tf, adapters)
    fc_mse = (1 + 4) / 16
    assert out.terms[adapter_key("fc", "fc")].item() == pytest.approx(fc_mse)
    assert out.terms[adapter_key("body.0", "body.0")].item() == pytest.approx(1.0)
    assert out.total.item() == pytest.approx(2.0 * fc_mse + 0.5 * 1.0)


# ---------------------------------------------------------------- gradients


def test_gradients_reach_student_and_adapters_not_teacher():
    torch.manual_seed(0)
    student, teacher = Named((4, 6), hidden=8), Named((8, 12), hidden=16)
    pairs = [("body.4", "body.4"), ("fc", "fc")]
    x = torch.randn(4, 1, 8, 8)
    adapters = build_adapters(student, teacher, pairs, x)
    with FeatureTaps(student, ["body.4", "fc"], role="student") as st, \
            FeatureTaps(teacher, ["body.4", "fc"], role="teacher") as tt:
        s_out, t_out = student(x), teacher(x)  # teacher WITH grad on: the loss must detach it
        loss = feature_loss(st.outputs, tt.outputs, adapters).total
        loss = loss + embedding_loss(s_out, t_out, 1.0, 1.0).total
        loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())
    assert student.body[4].weight.grad.abs().sum() > 0 and student.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# ---------------------------------------------------------------- taps


def test_taps_capture_module_outputs_and_remove_their_hooks():
    torch.manual_seed(0)
    model = Named((4, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    taps = FeatureTaps(model, ["body.4", "fc", "body.4"])
    assert taps.paths == ["body.4", "fc"]
    model(x)
    with torch.no_grad():
        expected_conv = model.body[4](model.body[:4](x))  # body.4: the conv before the last ReLU
        expected_fc = model.fc(model.pool(model.body(x)))
    assert taps.outputs["body.4"].shape == (3, 8, 4, 4)
    torch.testing.assert_close(taps.outputs["body.4"], expected_conv)
    torch.testing.assert_close(taps.outputs["fc"], expected_fc)
    # A second forward replaces the captures.
    model(x[:1])
    assert taps.outputs["fc"].shape == (1, 16)
    taps.remove()
    assert not taps.outputs
    assert not model.body[4]._forward_hooks and not model.fc._forward_hooks
    model(x)
    assert not taps.outputs
    # As a context manager.
    with FeatureTaps(model, ["head"]) as t2:
        model(x)
        assert t2.outputs["head"].shape == (3, 10)
    assert not model.head._forward_hooks


def test_taps_take_the_first_tensor_of_a_tuple_output():
    class Block(nn.Module):
        def forward(self, x):
            return x * 2, {"aux": 1}

    model = nn.Sequential()
    model.add_module("blk", Block())
    with FeatureTaps(model, ["blk"]) as taps:
        model(torch.ones(2, 3))
        torch.testing.assert_close(taps.outputs["blk"], torch.full((2, 3), 2.0))


def test_bad_path_lists_valid_paths_closest_first():
    model = nn.Module()
    model.body = nn.Sequential(*[nn.ReLU() for _ in range(40)])
    with pytest.raises(UsageError) as e:
        FeatureTaps(model, ["body.7x"], role="student")
    msg = e.value.message
    assert msg.startswith("no module 'body.7x' in the student; valid paths: body.7, ")
    assert msg.endswith(", … (41 in all)")
    assert e.value.exit_code == EXIT_USAGE
    # No hook was left behind by the failed constructor.
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(UsageError, match="no named submodules"):
        FeatureTaps(nn.Identity(), ["x"], role="teacher")


# ---------------------------------------------------------------- adapters


def test_adapters_for_each_shape_relation():
    student, teacher = Named((4, 6), hidden=8), Named((4, 12), hidden=16)
    pairs = [
        FeaturePair(student="body.4", teacher="body.4"),  # 6 vs 12 channels at 4×4: Conv2d 1×1
        FeaturePair(student="fc", teacher="fc"),  # 8 vs 16: Linear
        FeaturePair(student="body.0", teacher="body.0"),  # 4 vs 4 at 8×8: Identity
        FeaturePair(student="body.0", teacher="body.4"),  # 8×8 vs 4×4, 4 vs 12: pool + conv
        FeaturePair(student="body.4", teacher="body.0"),  # 4×4 vs 8×8: the teacher side pools
    ]
    x = torch.randn(2, 1, 8, 8)
    adapters = build_adapters(student, teacher, pairs, x)
    conv = adapters[adapter_key("body.4", "body.4")]
    assert isinstance(conv.project, nn.Conv2d) and conv.project.kernel_size == (1, 1)
    assert (conv.project.in_channels, conv.project.out_channels) == (6, 12) and not conv.pools
    lin = adapters[adapter_key("fc", "fc")]
    assert isinstance(lin.project, nn.Linear) and (lin.project.in_features, lin.project.out_features) == (8, 16)
    same = adapters[adapter_key("body.0", "body.0")]
    assert isinstance(same.project, nn.Identity) and not list(same.parameters())
    down = adapters[adapter_key("body.0", "body.4")]
    assert down.pools and isinstance(down.project, nn.Conv2d)
    s, t = down(torch.randn(2, 4, 8, 8), torch.randn(2, 12, 4, 4))
    assert s.shape == t.shape == (2, 12, 4, 4)
    up = adapters[adapter_key("body.4", "body.0")]
    t_in = torch.randn(2, 4, 8, 8)
    s, t = up(torch.randn(2, 6, 4, 4), t_in)
    assert s.shape == t.shape == (2, 4, 4, 4)
    torch.testing.assert_close(t, nn.functional.avg_pool2d(t_in, 2))  # 8×8 -> 4×4 average
    # Keys are ModuleDict-safe and the adapters checkpoint through a state_dict.
    assert set(adapters.state_dict()) >= {f"{adapter_key('body.4', 'body.4')}.project.weight"}
    # Modes and hooks of the models are as before.
    assert student.training and not any(m._forward_hooks for m in student.modules())


def test_adapter_errors_name_both_shapes():
    student, teacher = Named((4, 6)), Named((4, 6))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(UsageError, match=r"ranks differ: student 'body.4' \[2, 6, 4, 4\] vs teacher 'fc' \[2, 16\]"):
        build_adapters(student, teacher, [("body.4", "fc")], x)
    with pytest.raises(UsageError, match="no module 'body.9' in the teacher"):
        build_adapters(student, teacher, [("body.4", "body.9")], x)
    with pytest.raises(UsageError, match="listed twice"):
        build_adapters(student, teacher, [("fc", "fc"), ("fc", "fc", 2.0)], x)
    assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])


def test_feature_loss_through_an_adapter_trains_down():
    """A real optimisation: the student's features and a 1×1 adapter learn the teacher's maps."""
    torch.manual_seed(0)
    student, teacher = Named((4, 6), hidden=8), Named((8, 12), hidden=16)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    x = torch.randn(32, 1, 8, 8)
    adapters = build_adapters(student, teacher, [FeaturePair(student="body.4", teacher="body.4")], x)
    opt = torch.optim.AdamW([*student.parameters(), *adapters.parameters()], lr=3e-2, weight_decay=0.0)
    losses = []
    with FeatureTaps(student, ["body.4"]) as st, FeatureTaps(teacher, ["body.4"]) as tt:
        with torch.no_grad():
            teacher(x)
        target = {k: v.clone() for k, v in tt.outputs.items()}
        for _ in range(50):
            student(x)
            loss = feature_loss(st.outputs, target, adapters).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st.clear()
            losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


# ---------------------------------------------------------------- config


def test_feature_pairs_round_trip_through_load_config(tmp_path):
    default = load_config(None).distill
    assert default.features == []
    p = tmp_path / "edgedistill.toml"
    p.write_text(
        '[[distill.features]]\nstudent = "body.4"\nteacher = "body.8"\nweight = 0.25\n'
        '[[distill.features]]\nstudent = "fc"\nteacher = "fc"\n'
    )
    cfg = load_config(p).distill
    assert cfg.features == [FeaturePair(student="body.4", teacher="body.8", weight=0.25),
                            FeaturePair(student="fc", teacher="fc", weight=1.0)]
    again = load_config(None, {"distill.features": [f.model_dump() for f in cfg.features]}).distill
    assert again.features == cfg.features


@pytest.mark.parametrize("body, needle, hint", [
    ('student = "a"\nteachr = "b"\n', "distill.features.0.teachr", "distill.features.0.teacher"),
    ('student = "a"\nteacher = "b"\nwieght = 2\n', "distill.features.0.wieght", "distill.features.0.weight"),
])
def test_feature_pair_unknown_key_gets_did_you_mean(tmp_path, body, needle, hint):
    p = tmp_path / "edgedistill.toml"
    p.write_text("[[distill.features]]\n" + body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in e.value.message and hint in e.value.hint
    assert e.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("text, needle", [
    ('[[distill.features]]\nstudent = "a"\nteacher = "b"\nweight = 0\n', "greater than 0"),
])
def test_bad_loss_settings(tmp_path, text, needle):
    p = tmp_path / "edgedistill.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)
