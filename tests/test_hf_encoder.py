"""Hugging Face base encoders ("hf:<folder>" of a BertModel, as sentence-transformers saves one)
as embedding teachers, their shallow students, the distill defaults chosen by what the student
is, and the refusals (a logits objective, a sequence past the position table).

Tiny random models are built offline from a config; the embeddings are checked against a
hand-written mean pooling + L2 normalisation of transformers' own output.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_distill_bad_input import assert_refused

from edgedistill.cli import cli
from edgedistill.config import DistillConfig
from edgedistill.distill.defaults import PRETRAINED_TRANSFORMER, SCRATCH, resolve
from edgedistill.distill.teachers import HFTextModel
from edgedistill.specs import load_model, load_student

transformers = pytest.importorskip("transformers", reason="transformers is not installed (edgedistill[hf])")

VOCAB, LENGTH, LAYERS, HIDDEN, MAX_POSITIONS = 50, 8, 4, 16, 16
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def bert_config():
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                   num_attention_heads=2, intermediate_size=32,
                                   max_position_embeddings=MAX_POSITIONS)


def save_encoder(folder, pooling="mean", normalize=True):
    """A sentence-transformers-style folder: the BertModel, 1_Pooling/config.json, modules.json."""
    torch.manual_seed(0)
    transformers.BertModel(bert_config()).save_pretrained(folder)
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        keys = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "sqrt": "mean_sqrt_len_tokens"}
        modes = {f"pooling_mode_{key}": name == pooling for name, key in keys.items()}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": HIDDEN, **modes}))
        (folder / "modules.json").write_text(json.dumps(MODULES if normalize else MODULES[:2]))
    return folder


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    return save_encoder(tmp_path_factory.mktemp("encoder"))


def text_inputs(n=4, seed=0):
    """Ids, a mask with padding (sentences of different lengths) and two-segment token types."""
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(1, VOCAB, size=(n, LENGTH)))
    mask = torch.ones_like(ids)
    for row, length in enumerate(np.linspace(3, LENGTH, n).astype(int)):
        ids[row, length:], mask[row, length:] = 0, 0
    types = torch.zeros_like(ids)
    types[:, 2:] = 1
    return ids, mask, types


def test_encoder_embedding_is_transformers_output_mean_pooled_and_normalised(encoder_folder):
    teacher = load_model(f"hf:{encoder_folder}", role="teacher")
    assert isinstance(teacher, HFTextModel) and teacher.embedding and teacher.pooling == ("mean",)
    assert "mean pooling (1_Pooling/config.json), L2-normalised" in teacher.load_note
    reference = transformers.BertModel.from_pretrained(encoder_folder).eval()
    ids, mask, types = text_inputs()
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        m = mask.unsqueeze(-1).float()
        expected = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
        got = teacher(input_ids=ids, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert got.shape == (4, HIDDEN)
        # the one-tensor path (float ids, mask from pad_token_id, types 0) equals the named path
        torch.testing.assert_close(teacher(ids.float()), teacher(ids, attention_mask=mask), rtol=0, atol=0)
        assert not torch.allclose(teacher(ids, attention_mask=mask), got)  # the token types matter


@pytest.mark.parametrize(("pooling", "normalize"), [("cls", False), ("max", True), (None, False)])
def test_pooling_and_normalisation_follow_the_folder(tmp_path, pooling, normalize):
    teacher = load_model(f"hf:{save_encoder(tmp_path, pooling, normalize)}", role="teacher")
    ids, mask, _ = text_inputs(seed=1)
    with torch.no_grad():
        hidden = teacher.model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = teacher(ids, attention_mask=mask)
    if pooling == "cls":
        expected = hidden[:, 0]
    elif pooling == "max":
        expected = F.normalize(hidden.masked_fill(mask.unsqueeze(-1) == 0, -1e9).max(1).values, dim=-1)
    else:  # no 1_Pooling/config.json, no modules.json: mean pooling, not normalised
        expected = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        assert "mean pooling (no 1_Pooling/config.json)" in teacher.load_note
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert ("not normalised" in teacher.load_note) is not normalize


def test_token_type_ids_are_an_input_only_where_the_model_takes_them(encoder_folder, tmp_path):
    bert = load_model(f"hf:{encoder_folder}", role="teacher")
    assert list(inspect.signature(bert.forward).parameters) == ["input_ids", "attention_mask", "token_type_ids"]
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=32,
                                           max_position_embeddings=MAX_POSITIONS)
    transformers.DistilBertModel(config).save_pretrained(tmp_path)
    distil = load_model(f"hf:{tmp_path}", role="teacher")
    assert list(inspect.signature(distil.forward).parameters) == ["input_ids", "attention_mask"]
    ids, mask, types = text_inputs()
    with torch.no_grad():
        assert distil(input_ids=ids, attention_mask=mask).shape == (4, HIDDEN)
        with pytest.raises(TypeError, match="token_type_ids"):
            distil(input_ids=ids, attention_mask=mask, token_type_ids=types)


def test_shallow_student_of_an_encoder_keeps_its_layers_and_pooling(encoder_folder):
    teacher = load_model(f"hf:{encoder_folder}", role="teacher")
    notes = []
    student = load_student("shallow:2", None, teacher=teacher, input_shape=(LENGTH,), note=notes.append)
    assert "model.encoder.layer keeps blocks 0, 2 of 4" in notes[0]
    assert len(student.model.encoder.layer) == 2 and student.model.config.num_hidden_layers == 2
    assert teacher.model.config.num_hidden_layers == LAYERS
    for kept, source in zip(student.model.encoder.layer, (0, 2), strict=True):
        theirs = dict(teacher.model.encoder.layer[source].named_parameters())
        assert all(torch.equal(p, theirs[n]) for n, p in kept.named_parameters())
    assert (student.pooling, student.normalize) == (teacher.pooling, teacher.normalize)
    ids, mask, types = text_inputs()
    with torch.no_grad():
        out = student(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert out.shape == (4, HIDDEN)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


def test_defaults_follow_what_the_student_is_and_a_user_value_wins(encoder_folder):
    teacher = load_model(f"hf:{encoder_folder}", role="teacher")
    derived = load_student("shallow:2", None, teacher=teacher, input_shape=(LENGTH,))
    cfg, why = resolve(DistillConfig(objective="embedding"), derived)
    assert (cfg.lr, cfg.batch_size) == (PRETRAINED_TRANSFORMER.lr, PRETRAINED_TRANSFORMER.batch_size)
    assert PRETRAINED_TRANSFORMER.lr < SCRATCH.lr and PRETRAINED_TRANSFORMER.batch_size < SCRATCH.batch_size
    assert f"lr {cfg.lr:g}, batch_size 32" in why and str(encoder_folder) in why and "pretrained" in why
    # the same architecture from a bare config (random weights) trains from scratch
    scratch = HFTextModel(transformers.BertModel(bert_config()), pooling=("mean",))
    cfg, why = resolve(DistillConfig(), scratch)
    assert (cfg.lr, cfg.batch_size) == (3e-3, 64) and "from its own initial weights" in why
    assert resolve(DistillConfig(), torch.nn.Linear(2, 2))[0].lr == 3e-3
    # a user-given value always wins; the other is still chosen by the student
    cfg, why = resolve(DistillConfig(lr=5e-3), derived)
    assert (cfg.lr, cfg.batch_size) == (5e-3, 32) and "lr 0.005 (yours)" in why
    given = DistillConfig(lr=2e-2, batch_size=8)
    assert resolve(given, derived) == (given, None)


def test_distill_cli_on_an_encoder_logs_and_keys_the_chosen_defaults(encoder_folder, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(100, LENGTH))
    np.savez(tmp_path / "tokens.npz", x=ids, y=np.arange(100) % 3)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgedistill.toml").write_text('[distill]\nobjective = "embedding"\nthreads = 1\n')
    args = ["distill", "--teacher", f"hf:{encoder_folder}", "--student", "shallow:2",
            "--data", str(tmp_path / "tokens.npz"), "--epochs", "1", "--out-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "BertModel encoder, 4 layers, inputs input_ids, attention_mask, token_type_ids" in result.stderr
    assert "distill defaults: lr 0.001, batch_size 32: fine-tuning a pretrained transformer" in result.stderr
    history = [json.loads(line) for line in
               (tmp_path / "runs" / "default" / "distill" / "history.jsonl").read_text().splitlines()]
    assert history[0]["lr"] <= 1e-3 and 0 < history[0]["val_cosine"] <= 1
    # the resolved values are in the stage key: the same lr given explicitly reuses the stage
    (tmp_path / "edgedistill.toml").write_text('[distill]\nobjective = "embedding"\nthreads = 1\nlr = 1e-3\n'
                                               "batch_size = 32\n")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "distill: unchanged, reusing" in again.stderr, again.output


def run_distill(tmp_path, monkeypatch, teacher, x, toml=""):
    np.savez(tmp_path / "tokens.npz", x=x, y=np.arange(len(x)) % 3)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgedistill.toml").write_text(toml)
    return CliRunner().invoke(cli, ["distill", "--teacher", f"hf:{teacher}", "--student", "shallow:2",
                                    "--data", str(tmp_path / "tokens.npz"), "--out-dir", str(tmp_path / "runs"),
                                    "--epochs", "1", "-q"])


def test_a_logits_objective_with_an_encoder_is_refused(encoder_folder, tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(1, VOCAB, size=(100, LENGTH))
    line = assert_refused(run_distill(tmp_path, monkeypatch, encoder_folder, x), tmp_path,
                          "text encoder (BertModel)", "sentence embedding", "distill.objective is 'logits'")
    assert line.startswith("error: the teacher is")


def test_a_sequence_longer_than_the_position_table_is_refused(encoder_folder, tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(1, VOCAB, size=(100, MAX_POSITIONS + 4))
    result = run_distill(tmp_path, monkeypatch, encoder_folder, x, '[distill]\nobjective = "embedding"\n')
    assert_refused(result, tmp_path, f"sequences have {MAX_POSITIONS + 4} tokens",
                   f"max_position_embeddings {MAX_POSITIONS}")
