"""Hugging Face teachers ("hf:<folder>") and the DistilBERT-style "shallow:<k>" student, for real.

A tiny random BERT classifier is built offline from a config and saved with save_pretrained;
everything else goes through the project's own loaders and CLI.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgedistill.cli import cli
from edgedistill.config import DataConfig
from edgedistill.data import load_data
from edgedistill.distill.teachers import HFTeacher
from edgedistill.errors import UnsafeModelError, UsageError
from edgedistill.specs import load_model, load_student

transformers = pytest.importorskip("transformers", reason="transformers is not installed (edgedistill[hf])")

VOCAB, LENGTH, CLASSES, LAYERS = 50, 8, 3, 4


def bert(**overrides):
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=LAYERS,
                                     num_attention_heads=2, intermediate_size=32, num_labels=CLASSES,
                                     **overrides)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    bert().save_pretrained(folder)
    return folder


def token_ids(n, seed=0):
    """Ids of real tokens: 0 is BERT's padding id."""
    return torch.from_numpy(np.random.default_rng(seed).integers(1, VOCAB, size=(n, LENGTH)))


def test_padding_is_masked_as_a_tokenizer_would(hf_folder):
    teacher = load_model(f"hf:{hf_folder}", role="teacher")
    reference = transformers.BertForSequenceClassification.from_pretrained(hf_folder).eval()
    ids = token_ids(4)
    ids[:, 5:] = reference.config.pad_token_id  # shorter sentences padded to LENGTH
    with torch.no_grad():
        masked = reference(ids, attention_mask=(ids != 0).long()).logits
        torch.testing.assert_close(teacher(ids.float()), masked, rtol=0, atol=0)
        assert not torch.allclose(reference(ids).logits, masked)  # the mask matters here


def test_hf_teacher_gives_the_transformers_models_logits(hf_folder):
    teacher = load_model(f"hf:{hf_folder}", role="teacher")
    assert isinstance(teacher, HFTeacher) and teacher.takes_ids and not teacher.training
    reference = transformers.BertForSequenceClassification.from_pretrained(hf_folder).eval()
    ids = token_ids(5)
    with torch.no_grad():
        expected = reference(ids).logits
        assert teacher(ids).shape == (5, CLASSES)
        torch.testing.assert_close(teacher(ids), expected, rtol=0, atol=0)
        # the data pipeline hands over float32 tensors: the ids must survive the round trip
        torch.testing.assert_close(teacher(ids.float()), expected, rtol=0, atol=0)


def test_shallow_student_of_an_hf_teacher_keeps_layers_0_and_2(hf_folder, tmp_path):
    teacher = load_model(f"hf:{hf_folder}", role="teacher")
    notes = []
    student = load_student("shallow:2", None, teacher=teacher, input_shape=(LENGTH,), note=notes.append)
    t_layers, s_layers = teacher.model.bert.encoder.layer, student.model.bert.encoder.layer
    assert len(s_layers) == 2 and len(t_layers) == LAYERS
    assert "model.bert.encoder.layer keeps blocks 0, 2 of 4" in notes[0]
    for kept, source in zip(s_layers, (0, 2), strict=True):
        theirs = dict(t_layers[source].named_parameters())
        for name, p in kept.named_parameters():
            assert torch.equal(p, theirs[name]), (source, name)
            assert p.data_ptr() != theirs[name].data_ptr()  # a copy: training it leaves the teacher alone
    for name in ("bert.embeddings.word_embeddings.weight", "classifier.weight", "bert.pooler.dense.weight"):
        assert torch.equal(student.model.get_parameter(name), teacher.model.get_parameter(name)), name
    # the config describes the student's depth; the teacher's own config is untouched
    assert student.model.config.num_hidden_layers == 2 and teacher.model.config.num_hidden_layers == LAYERS
    ids = token_ids(4, seed=1)
    with torch.no_grad():
        logits = student(ids)
    assert logits.shape == (4, CLASSES) and torch.isfinite(logits).all()
    # saved as a transformers folder, the student comes back as the same 2-layer model
    student.model.save_pretrained(tmp_path / "student")
    assert json.loads((tmp_path / "student" / "config.json").read_text())["num_hidden_layers"] == 2
    reloaded = load_model(f"hf:{tmp_path / 'student'}", role="teacher")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids), logits, rtol=0, atol=0)


def test_folder_without_config_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match=r"expected a save_pretrained folder with config.json, found \['model"):
        load_model(f"hf:{tmp_path}", role="teacher")


def test_pickled_weights_only_are_refused_not_reported_as_a_wrong_class(hf_folder, tmp_path):
    shutil.copy(hf_folder / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(UnsafeModelError, match=r"weights are pickles \(pytorch_model.bin\)"):
        load_model(f"hf:{tmp_path}", role="teacher")


def test_classifier_without_its_head_is_refused_instead_of_a_random_classifier(tmp_path):
    transformers.BertModel(bert().config).save_pretrained(tmp_path)  # encoder only, no classifier
    # ... but its config names the classifier: a base model (a sentence encoder) would load as
    # an embedding model instead (tests/test_hf_encoder.py)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(UsageError, match=r"lack 2 tensor\(s\).*classifier.bias, classifier.weight"):
        load_model(f"hf:{tmp_path}", role="teacher")


def test_distill_cli_with_an_hf_teacher_and_a_shallow_student_on_token_ids(hf_folder, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.arange(200) % CLASSES
    x = rng.integers(CLASSES, VOCAB, size=(200, LENGTH))
    x[:, 1] = y  # the class is visible in token 1: something a student can learn
    np.savez(tmp_path / "tokens.npz", x=x.astype(np.int64), y=y)
    splits = load_data(DataConfig(spec=str(tmp_path / "tokens.npz")), seed=0)
    # float32 holds these ids exactly; the HF wrapper turns them back into int64 ids
    assert torch.equal(splits.x_train, splits.x_train.round()) and splits.x_train.max() < VOCAB

    monkeypatch.chdir(tmp_path)
    # The tiny BERT is untrained, so at chance: allowed here (RELIABILITY 30 would stop it).
    (tmp_path / "edgedistill.toml").write_text("[teacher]\nallow_weak_teacher = true\n")
    args = ["distill", "--teacher", f"hf:{hf_folder}", "--student", "shallow:2",
            "--data", str(tmp_path / "tokens.npz"), "--epochs", "1", "--out-dir", str(tmp_path / "runs"), "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, (first.output, first.exception)
    out = json.loads(first.stdout)
    weights = tmp_path / "runs" / "default" / "distill" / "student.safetensors"
    assert out["weights"] == str(weights) and weights.is_file() and out["epochs"] == 1
    assert 0 <= out["student_val_acc"] <= 1

    # the trained weights load back into the derived 2-layer student
    teacher = load_model(f"hf:{hf_folder}", role="teacher")
    student = load_student("shallow:2", weights, teacher=teacher, input_shape=(LENGTH,))
    assert len(student.model.bert.encoder.layer) == 2
    assert not torch.equal(student.model.classifier.weight, teacher.model.classifier.weight)  # it trained

    # a second identical run reuses the stage: the weights file is not rewritten
    stamp = weights.stat().st_mtime_ns
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, (again.output, again.exception)
    assert weights.stat().st_mtime_ns == stamp and json.loads(again.stdout) == out
