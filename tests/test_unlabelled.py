"""Issue 12 item 3: data without labels is split at random and distilled on the teacher alone.

Splits: reproducible by seed, every row exactly once, each split row traceable to the user's row;
a mix of labelled and unlabelled rows keeps the stratified split of the labelled ones. Distill:
an .npz with x only trains for both objectives, validated against the teacher.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data import load_data
from edgedistill.errors import UsageError


def write_npz(path, n=200, labels=None, seed=0):
    """x[i, 0] == i, so a split row can be traced back to the row it came from."""
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    x[:, 0] = np.arange(n)
    np.savez(path, **({"x": x} if labels is None else {"x": x, "y": labels}))
    return path


def rows(x: torch.Tensor) -> list[int]:
    return x[:, 0].long().tolist()


# ---------------------------------------------------------------- splits


def test_unlabelled_split_is_seeded_and_covers_every_row_once(tmp_path):
    cfg = DataConfig(spec=str(write_npz(tmp_path / "u.npz")))
    a, b, other = load_data(cfg, seed=5), load_data(cfg, seed=5), load_data(cfg, seed=6)
    for name in ("train_index", "val_index", "test_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.fingerprint == b.fingerprint
    assert not np.array_equal(a.test_index, other.test_index) and a.fingerprint != other.fingerprint
    every = np.concatenate([a.train_index, a.val_index, a.test_index])
    assert sorted(every.tolist()) == list(range(200))  # each row exactly once
    assert (len(a.val_index), len(a.test_index)) == (20, 40)
    assert rows(a.x_train) == a.train_index.tolist() and rows(a.x_test) == a.test_index.tolist()


def test_mixed_data_keeps_the_stratified_labelled_split(tmp_path):
    y = np.arange(200) % 4
    y[::2] = -1  # rows 0, 2, 4, ...: unlabelled; the labelled ones are classes 1 and 3
    splits = load_data(DataConfig(spec=str(write_npz(tmp_path / "m.npz", labels=y))), seed=0)
    assert splits.labelled and splits.num_classes == 4
    # val and test hold labelled rows only, both classes in equal shares (stratified)
    for index, part in ((splits.val_index, splits.y_val), (splits.test_index, splits.y_test)):
        assert (y[index] >= 0).all() and torch.equal(part, torch.from_numpy(y[index]))
        counts = np.bincount(part.numpy(), minlength=4)
        assert counts[1] == counts[3] and counts[0] == counts[2] == 0
    assert (len(splits.val_index), len(splits.test_index)) == (10, 20)  # fractions of the 100 labelled
    unlabelled_rows = set(np.flatnonzero(y == -1).tolist())
    assert unlabelled_rows <= set(splits.train_index.tolist())
    assert rows(splits.x_train) == splits.train_index.tolist()
    assert torch.equal(splits.y_train, torch.from_numpy(y[splits.train_index]))


def test_entrypoint_yielding_named_inputs_alone_is_split_at_random(tmp_path, monkeypatch):
    (tmp_path / "unl_text_data.py").write_text(
        "import numpy as np\n"
        "def data():\n"
        "    return [{'input_ids': np.full(6, i, dtype=np.int64), 'attention_mask': np.ones(6, dtype=np.int64)}\n"
        "            for i in range(120)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    splits = load_data(DataConfig(spec="unl_text_data:data"), seed=0)
    assert not splits.labelled and (len(splits.val_index), len(splits.test_index)) == (12, 24)
    for part, index in ((splits.x_train, splits.train_index), (splits.x_test, splits.test_index)):
        assert part["input_ids"].dtype == torch.int64
        assert part["input_ids"][:, 0].tolist() == index.tolist()  # item i holds the id i
    assert sorted(np.concatenate([splits.train_index, splits.val_index, splits.test_index]).tolist()) == list(range(120))


def test_too_few_unlabelled_rows_name_the_sizes(tmp_path):
    with pytest.raises(UsageError, match=r"at least 10 samples.*validation 4.*from 0 labelled and 40 unlabelled"):
        load_data(DataConfig(spec=str(write_npz(tmp_path / "s.npz", n=40))), seed=0)


# ---------------------------------------------------------------- distilling without labels

MODELS = '''
import torch

def _mlp(hidden, out, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))

def teacher():
    return _mlp(32, 4, 0)

def student():
    return _mlp(12, 4, 1)

def emb_teacher():
    return _mlp(32, 16, 0)

def emb_student():
    return _mlp(12, 16, 1)
'''


def write_config(folder, data, objective="logits", run="r"):
    prefix = "emb_" if objective == "embedding" else ""
    path = folder / f"{run}.toml"
    path.write_text(
        f'[run]\nname = "{run}"\nout_dir = "{folder / "runs"}"\n'
        f'[teacher]\nspec = "unlmodels:{prefix}teacher"\n[student]\nspec = "unlmodels:{prefix}student"\n'
        f'[data]\nspec = "{data}"\n'
        f'[distill]\nobjective = "{objective}"\nepochs = 1\nbatch_size = 32\nthreads = 1\n'
    )
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A models module on sys.path, an .npz with x only (300 rows), one with labels for every row."""
    import sys

    folder = tmp_path_factory.mktemp("unlabelled")
    (folder / "unlmodels.py").write_text(MODELS)
    write_npz(folder / "x_only.npz", n=300)
    write_npz(folder / "labelled.npz", n=300, labels=np.arange(300) % 4)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("unlmodels", None)


def distill_run(config_path):
    from edgedistill import api
    from edgedistill.config import load_config
    from edgedistill.ui import UI

    ws = api.open_workspace(load_config(config_path))
    return ws, api.distill(ws, UI(quiet=False))


@pytest.fixture(scope="module")
def logits_run(project):
    return distill_run(write_config(project, project / "x_only.npz"))


def test_x_only_npz_distils_logits_validated_by_agreement_with_the_teacher(logits_run):
    from edgedistill.distill.objectives import agreement
    from edgedistill.distill.teacher_cache import predict

    ws, d = logits_run
    m = d.metrics
    assert m["teacher_val_acc"] is None and "student_val_acc" not in m
    expected = agreement(d.student, d.splits.x_val, predict(d.teacher, d.splits.x_val).argmax(dim=1))
    assert m["student_val_agreement"] == pytest.approx(expected) and 0 <= expected <= 1
    assert m["val_samples"] == 30 and m["epochs"] == 1
    history = (ws.run_dir / "distill" / "history.jsonl").read_text()
    assert '"val_agreement"' in history and '"val_acc"' not in history
    assert json.loads(history)["ce"] == 0.0  # no labels: the label term is empty, KD alone trains


def test_no_labels_note_says_agreement_and_skipped_teacher_check(project, capfd):
    distill_run(write_config(project, project / "x_only.npz", run="note"))
    err = capfd.readouterr().err
    assert "no labels" in err and "val_agreement" in err and "weak-teacher check" in err


def test_x_only_npz_distils_an_embedding_student(project):
    from edgedistill.distill.objectives import mean_cosine
    from edgedistill.distill.teacher_cache import predict

    _, d = distill_run(write_config(project, project / "x_only.npz", objective="embedding", run="emb"))
    cosine = mean_cosine(predict(d.student, d.splits.x_val), predict(d.teacher, d.splits.x_val))
    assert d.metrics["student_val_cosine"] == pytest.approx(cosine)


def test_hinton_loss_on_an_all_unlabelled_batch_is_the_kd_term_alone():
    from edgedistill.distill.losses import hinton_loss

    s = torch.randn(6, 4, requires_grad=True)
    loss = hinton_loss(s, torch.randn(6, 4), torch.full((6,), -1), temperature=2.0, alpha=0.3)
    assert loss.ce.item() == 0.0 and loss.kd.item() > 0
    assert loss.total.item() == pytest.approx(0.7 * loss.kd.item())
    loss.total.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# ---------------------------------------------------------------- suggest-labels (item 6)


def suggest(*args):
    from click.testing import CliRunner

    from edgedistill.cli import cli

    return CliRunner().invoke(cli, ["suggest-labels", *map(str, args)])


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_pair(ws, prefix=""):
    """The teacher and the run's distilled student, loaded as a user would load them."""
    import unlmodels
    from safetensors.torch import load_file

    student = getattr(unlmodels, f"{prefix}student")()
    student.load_state_dict(load_file(ws.run_dir / "distill" / "student.safetensors"))
    return getattr(unlmodels, f"{prefix}teacher")().eval(), student.eval()


def test_suggest_labels_ranks_unlabelled_rows_of_the_users_file(project, logits_run, tmp_path):
    ws, d = logits_run
    out = tmp_path / "to_label.csv"
    r = suggest("-c", project / "r.toml", "--top-percent", "5", "-o", out)
    assert r.exit_code == 0, r.output
    assert "unchanged, reusing" in r.stderr  # the distill stage of the run, not a new training
    rows_ = read_csv(out)
    assert list(rows_[0]) == ["rank", "index", "score", "teacher_entropy", "disagreement"]
    n_train = len(d.splits.train_index)
    assert len(rows_) == -(-5 * n_train // 100)  # 5 % of the 210 unlabelled, rounded up: 11
    assert [int(row["rank"]) for row in rows_] == list(range(1, len(rows_) + 1))

    # Recomputed independently on the rows of the user's file the CSV names.
    teacher, student = load_pair(ws)
    x = torch.from_numpy(np.load(project / "x_only.npz")["x"])
    with torch.no_grad():
        p, q = (torch.softmax(m(x).double(), dim=1).numpy() for m in (teacher, student))
    mid = (p + q) / 2
    h = -(p * np.log(p)).sum(axis=1) / np.log(4)
    js = 0.5 * (p * np.log2(p / mid)).sum(axis=1) + 0.5 * (q * np.log2(q / mid)).sum(axis=1)
    score = (h + js) / 2
    index = [int(row["index"]) for row in rows_]
    for row, i in zip(rows_, index, strict=True):
        assert float(row["teacher_entropy"]) == pytest.approx(h[i], rel=1e-4)
        assert float(row["disagreement"]) == pytest.approx(js[i], rel=1e-4, abs=1e-9)
        assert float(row["score"]) == pytest.approx(score[i], rel=1e-4)
    # exactly the highest-scored training rows, never a validation or test row
    train = d.splits.train_index
    assert set(index) == set(train[np.argsort(-score[train])[: len(index)]].tolist())


def test_suggest_labels_for_embeddings_scores_one_minus_cosine(project, tmp_path):
    ws, _ = distill_run(write_config(project, project / "x_only.npz", objective="embedding", run="emb-s"))
    out = tmp_path / "emb.csv"
    r = suggest("-c", project / "emb-s.toml", "--top", "3", "-o", out)
    assert r.exit_code == 0, r.output
    assert "does not apply" in r.stderr
    teacher, student = load_pair(ws, "emb_")
    x = torch.from_numpy(np.load(project / "x_only.npz")["x"])
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(student(x), teacher(x), dim=-1).numpy()
    rows_ = read_csv(out)
    assert len(rows_) == 3 and all(row["teacher_entropy"] == "" for row in rows_)
    for row in rows_:
        assert float(row["disagreement"]) == pytest.approx(1 - cos[int(row["index"])], rel=1e-4)
        assert float(row["score"]) == float(row["disagreement"])


def test_suggest_labels_without_unlabelled_samples_exits_2_before_training(project, tmp_path):
    out = tmp_path / "none.csv"
    r = suggest("-c", write_config(project, project / "labelled.npz", run="all-labelled"), "-o", out)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "no unlabelled training samples" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  hint: ") and "Traceback" not in r.output
    assert not out.exists() and not (project / "runs" / "all-labelled" / "distill").exists()


def test_suggest_labels_refuses_top_and_top_percent_together(project, tmp_path):
    r = suggest("-c", project / "r.toml", "--top", "3", "--top-percent", "5", "-o", tmp_path / "x.csv")
    assert r.exit_code == 2 and "not both" in r.stderr and not (tmp_path / "x.csv").exists()
