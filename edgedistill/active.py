"""Which unlabelled samples a label would help most (active learning), after distillation.

Every unlabelled training sample (label -1 in the user's data, or hidden by data.label_fraction)
gets two figures, both in [0, 1], and one score that ranks them:

- teacher_entropy: the entropy of the teacher's softmax divided by log(classes). A teacher
  unsure of a sample is where its soft targets teach least, and where a label adds most.
- disagreement: the Jensen-Shannon divergence (base 2) between the teacher's and the distilled
  student's softmax. Where the student still differs from the teacher after distillation, it
  has not learned what the teacher knows there, and a label gives it a direct signal.
- score = (teacher_entropy + disagreement) / 2: equal weight, as both lie in [0, 1].

For an embedding objective there are no classes: teacher uncertainty does not apply (the
column is left empty) and the score is the disagreement, 1 - cosine(student, teacher), in [0, 2]
(per token embeddings: the mean over tokens).

The CSV names each sample by its row in the user's data file (DataSplits.train_index), so a
labelling tool can find it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from edgedistill.artifacts import atomic_write_text
from edgedistill.errors import UsageError

CSV_COLUMNS = ("rank", "index", "score", "teacher_entropy", "disagreement")
COMBINED = {
    "logits": "score = (teacher_entropy + disagreement) / 2; teacher_entropy = entropy of the teacher's "
              "softmax / log(classes), disagreement = Jensen-Shannon divergence (base 2) of the teacher's "
              "and the student's softmax; both in [0, 1]",
    "embedding": "score = disagreement = 1 - cosine(student, teacher embedding), in [0, 2]; teacher "
                 "uncertainty does not apply to embeddings (teacher_entropy left empty)",
}


@dataclass
class LabelScores:
    """One entry per unlabelled training sample, in descending score (ties: lower row first)."""

    index: np.ndarray  # int64: the row in the user's data
    score: np.ndarray
    teacher_entropy: np.ndarray | None  # None for embeddings
    disagreement: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def unlabelled_positions(y_train: torch.Tensor | None, n_train: int) -> np.ndarray:
    """Positions in the training split of the samples without a label."""
    if y_train is None:
        return np.arange(n_train)
    return np.flatnonzero(y_train.numpy() < 0)


def score_samples(
    teacher_out: torch.Tensor, student_out: torch.Tensor, rows: np.ndarray, objective: str
) -> LabelScores:
    """Rank samples by how informative a label would be; `rows` names each one in the user's data."""
    if objective == "embedding":
        cos = F.cosine_similarity(student_out.float(), teacher_out.float(), dim=-1)
        disagreement = (1 - cos).reshape(len(rows), -1).mean(dim=1).double().numpy()  # per token: the mean
        teacher_entropy, score = None, disagreement
    else:
        p_t = torch.softmax(teacher_out.double(), dim=1).numpy()
        p_s = torch.softmax(student_out.double(), dim=1).numpy()
        classes = p_t.shape[1]
        teacher_entropy = entropy(p_t, axis=1, base=classes) if classes > 1 else np.zeros(len(rows))
        # scipy returns the JS distance (the square root); squared, it is the divergence.
        disagreement = np.nan_to_num(jensenshannon(p_t, p_s, axis=1, base=2) ** 2)
        score = (teacher_entropy + disagreement) / 2
    order = np.lexsort((rows, -score))  # descending score; equal scores by row, so the order is stable
    return LabelScores(
        index=np.asarray(rows, dtype=np.int64)[order],
        score=score[order],
        teacher_entropy=None if teacher_entropy is None else teacher_entropy[order],
        disagreement=disagreement[order],
    )


def how_many(total: int, top: int | None, top_percent: float | None) -> int:
    """The number of samples to write: `top`, or `top_percent` % of `total` rounded up."""
    if top is not None and top_percent is not None:
        raise UsageError(f"give --top or --top-percent, not both (found --top {top} and --top-percent {top_percent:g})")
    if top is not None:
        if top < 1:
            raise UsageError(f"--top must be at least 1, found {top}")
        return min(top, total)
    if top_percent is not None:
        if not 0 < top_percent <= 100:
            raise UsageError(f"--top-percent must be in (0, 100], found {top_percent:g}")
        return min(total, max(1, math.ceil(total * top_percent / 100)))
    return total


def to_csv(scores: LabelScores, n: int) -> str:
    """`rank,index,score,teacher_entropy,disagreement` for the top n (rank 1 = label first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(min(n, len(scores))):
        entropy_cell = "" if scores.teacher_entropy is None else f"{scores.teacher_entropy[i]:.6g}"
        writer.writerow([i + 1, int(scores.index[i]), f"{scores.score[i]:.6g}", entropy_cell,
                         f"{scores.disagreement[i]:.6g}"])
    return buf.getvalue()


def write_csv(path: Path, scores: LabelScores, n: int) -> None:
    """Atomically: a labelling tool never reads a half-written file."""
    atomic_write_text(Path(path), to_csv(scores, n))
