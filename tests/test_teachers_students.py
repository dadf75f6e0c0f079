"""Teachers beyond PyTorch code (ONNX black box, Hugging Face) and students derived from the teacher."""

from __future__ import annotations

import functools
import sys

import onnx
import pytest
import test_distill
import torch
from test_distill import tiny_splits
from torch import nn

from edgedistill.config import DistillConfig
from edgedistill.distill.teacher_cache import model_digest
from edgedistill.distill.teachers import OnnxTeacher
from edgedistill.distill.trainer import distill as _distill
from edgedistill.distill.trainer import evaluate
from edgedistill.errors import UnsafeModelError, UsageError
from edgedistill.exporters import export_onnx
from edgedistill.specs import load_model, load_student
from edgedistill.zoo import digits_teacher

# Untrained teachers score at chance, which distill() refuses (RELIABILITY 30, tests/test_teacher_check.py):
# these tests are about the training loop, so they allow it.
distill = functools.partial(_distill, allow_weak_teacher=True)

FAST = DistillConfig(epochs=3, batch_size=32, lr=1e-2, threads=1)


def tiny_net(classes=3, seed=0):
    return test_distill.tiny_net(classes, seed).eval()


def trained_teacher(splits):
    """A tiny net fitted briefly on the labels, so it is a teacher worth distilling from."""
    model = tiny_net(seed=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(splits.x_train), splits.y_train).backward()
        opt.step()
    return model.eval()


def to_onnx(model, path, batch=None):
    example = torch.zeros((batch or 1, 1, 4, 4))
    export_onnx(model, example, path, role="teacher", dynamic_batch=batch is None)
    return path


# ---------------------------------------------------------------- ONNX teacher


def test_onnx_teacher_gives_the_torch_models_logits(tmp_path):
    model = tiny_net()
    teacher = load_model(str(to_onnx(model, tmp_path / "t.onnx")), role="teacher")
    assert isinstance(teacher, OnnxTeacher) and list(teacher.parameters()) == []
    x = torch.randn(70, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x), atol=1e-5, rtol=1e-4)


def test_onnx_teacher_with_a_static_batch_runs_in_chunks(tmp_path):
    model = tiny_net()
    teacher = OnnxTeacher(to_onnx(model, tmp_path / "b4.onnx", batch=4))
    assert teacher.static_batch == 4
    x = torch.randn(10, 1, 4, 4)  # 4 + 4 + a padded chunk of 2
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x), atol=1e-5, rtol=1e-4)


def test_distill_from_an_onnx_teacher(tmp_path):
    splits = tiny_splits(tmp_path / "d.npz")
    torch_teacher = trained_teacher(splits)
    teacher = load_model(str(to_onnx(torch_teacher, tmp_path / "t.onnx")), role="teacher")
    result = distill(teacher, tiny_net(seed=2), splits, FAST, tmp_path / "run", seed=0,
                     cache_dir=tmp_path / "cache")
    assert result.teacher_val_acc == pytest.approx(evaluate(torch_teacher, splits.x_val, splits.y_val))
    assert result.teacher_val_acc > 0.8
    assert result.student_val_acc > 0.55  # chance is 1/3: it learned from the ONNX outputs
    assert list((tmp_path / "cache").glob("teacher-logits-*.safetensors"))


def test_onnx_teacher_digest_follows_the_files_bytes(tmp_path):
    path = to_onnx(tiny_net(seed=0), tmp_path / "t.onnx")
    first, again = model_digest(OnnxTeacher(path)), model_digest(OnnxTeacher(path))
    to_onnx(tiny_net(seed=5), path)  # same name, same architecture, other weights
    assert first == again != model_digest(OnnxTeacher(path))


def test_onnx_teacher_is_copied_as_its_own_export(tmp_path):
    path = to_onnx(tiny_net(), tmp_path / "t.onnx")
    art = OnnxTeacher(path).copy_to(tmp_path / "out" / "teacher.onnx")
    assert art.kind == "onnx" and art.role == "teacher" and art.meta["dynamic_batch"]
    assert art.path.read_bytes() == path.read_bytes()


def test_onnx_teacher_with_external_data_outside_its_folder_is_refused(tmp_path):
    """RELIABILITY 4, through the teacher spec (tests/test_security.py has all three escapes)."""
    path = to_onnx(tiny_net(), tmp_path / "t.onnx")
    graph = onnx.load(str(path))
    tensor = graph.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.data")
    bad = tmp_path / "bad" / "t.onnx"
    bad.parent.mkdir()
    onnx.save(graph, str(bad))
    with pytest.raises(UnsafeModelError, match=r"\.\./secret\.data"):
        load_model(str(bad), role="teacher")


def test_onnx_student_is_refused(tmp_path):
    path = to_onnx(tiny_net(), tmp_path / "t.onnx")
    with pytest.raises(UsageError, match="can only be a teacher"):
        load_model(str(path), role="student")


def test_a_derived_student_of_an_onnx_teacher_is_refused(tmp_path):
    teacher = OnnxTeacher(to_onnx(tiny_net(), tmp_path / "t.onnx"))
    with pytest.raises(UsageError, match="no weights to copy"):
        load_student("prune:0.5", None, teacher=teacher, input_shape=(1, 4, 4))


# ---------------------------------------------------------------- Hugging Face teacher


def test_hf_teacher_without_transformers_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(UsageError, match="transformers") as err:
        load_model(f"hf:{tmp_path}", role="teacher")
    assert err.value.hint == "pip install 'edgedistill[hf]'"


def test_hf_teacher_returns_the_models_logits(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (edgedistill[hf])")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    teacher = load_model(f"hf:{tmp_path}", role="teacher")
    ids = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(teacher(ids.float()), model(ids).logits)


# ---------------------------------------------------------------- derived students


def params(model):
    return sum(p.numel() for p in model.parameters())


def test_pruned_student_keeps_the_teachers_surviving_weights():
    teacher = digits_teacher()
    notes = []
    student = load_student("prune:0.5", None, teacher=teacher, input_shape=(1, 32, 32), note=notes.append)
    assert 0.2 < params(student) / params(teacher) < 0.32, notes
    assert "params" in notes[0] and "MACs" in notes[0]
    with torch.no_grad():
        assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    t_rows, s_rows = teacher[0].weight.flatten(1), student[0].weight.flatten(1)
    assert len(s_rows) == 32  # half of the 64 first-layer filters
    # every surviving filter is one of the teacher's filters, unchanged
    assert all((t_rows == row).all(1).any() for row in s_rows)
    assert params(teacher) == params(digits_teacher())  # the teacher itself is untouched


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Stacked(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.layers = nn.ModuleList(Block() for _ in range(5))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x.flatten(1))
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_shallow_student_keeps_every_kth_block_with_the_teachers_weights():
    torch.manual_seed(0)
    teacher = Stacked()
    notes = []
    student = load_student("shallow:2", None, teacher=teacher, input_shape=(4,), note=notes.append)
    assert len(student.layers) == 3 and len(teacher.layers) == 5
    for kept, source in zip(student.layers, (0, 2, 4), strict=True):
        torch.testing.assert_close(kept.fc.weight, teacher.layers[source].fc.weight)
        assert kept.fc.weight.data_ptr() != teacher.layers[source].fc.weight.data_ptr()  # a copy
    torch.testing.assert_close(student.head.weight, teacher.head.weight)
    assert "keeps blocks 0, 2, 4 of 5" in notes[0]
    with torch.no_grad():
        assert student(torch.zeros(2, 4)).shape == (2, 3)


def test_shallow_student_of_a_model_without_stacks_lists_the_candidates():
    with pytest.raises(UsageError, match=r"candidates: \(root\): \d+ × AdaptiveAvgPool2d/BatchNorm2d/Conv2d"):
        load_student("shallow:2", None, teacher=digits_teacher(), input_shape=(1, 32, 32))


@pytest.mark.parametrize("spec", ["prune:1.5", "prune:abc", "prune:0", "prune:", "shallow:1", "shallow:x"])
def test_invalid_derived_student_specs_are_refused(spec):
    with pytest.raises(UsageError, match="found"):
        load_student(spec, None, teacher=tiny_net(), input_shape=(1, 4, 4))


def test_a_derived_spec_outside_a_distill_run_is_refused():
    with pytest.raises(UsageError, match="derives a student from the teacher"):
        load_model("prune:0.5", role="teacher")
