"""What "the student matches the teacher" means for each distill.objective.

"logits": class scores, checked against the data's class count and validated by top-1
accuracy on the labels; data with no labels at all is validated by top-1 AGREEMENT with the
teacher's predictions instead (the class count is then the teacher's output width, and the
weak-teacher check, which needs labels, is skipped). "embedding": vectors, checked for equal
(batch, D) / (batch, L, D) shapes and validated by the mean cosine similarity of student and
teacher embeddings; labels are not used (they only decide whether the split is stratified).

The validation score chosen here is the one number best-checkpoint selection and early
stopping follow, so both objectives are compared in one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.data import DataSplits
from edgedistill.data.inputs import Inputs
from edgedistill.distill.teacher_cache import predict
from edgedistill.errors import UsageError
from edgedistill.specs import check_compatible, check_embedding_compatible

# The per-epoch record key of each objective's validation score (higher is better).
SCORE_NAMES = {"logits": "val_acc", "embedding": "val_cosine"}
AGREEMENT = "val_agreement"  # objective "logits" on data without labels: top-1 agreement with the teacher
NO_LABELS_NOTE = (
    "the data has no labels: validation is the student's top-1 agreement with the teacher's "
    "predictions (val_agreement), and the weak-teacher check, which needs labels, is skipped"
)
# A teacher within this many points (as a fraction) of 1/classes, or below it, is "at chance".
CHANCE_MARGIN = 0.02
WEAK_TEACHER_CAUSES = (
    "this usually means wrong weights (a damaged file, or weights of another model), wrong "
    "preprocessing or input normalisation, or labels in another order than the teacher's classes"
)


def check_models(objective: str, teacher: nn.Module, student: nn.Module, splits: DataSplits) -> None:
    """Refuse, before the first step, models whose outputs this objective cannot compare (exit 2)."""
    from edgedistill.distill.teachers import check_objective

    check_objective(objective, teacher)  # an encoder's embedding is not a set of class scores
    if objective == "embedding":
        check_embedding_compatible(teacher, student, splits.sample)
    else:  # num_classes None (no labels): teacher and student must agree with each other
        check_compatible(teacher, student, splits.sample, splits.num_classes)


def score_name(objective: str, splits: DataSplits) -> str:
    """The record key of the validation score for this objective and data."""
    if objective == "logits" and not splits.labelled:
        return AGREEMENT
    return SCORE_NAMES[objective]


def check_teacher_score(score: float, num_classes: int, samples: int, *, allow: bool) -> None:
    """Refuse a classifier teacher that scores at or near chance on held-out labelled data (exit 2).

    Distilling from it would teach the student noise, and the gate would then compare the
    student against a broken reference. A teacher well above chance but still poor (46 % where
    99 % was expected) cannot be told from a weak one: that is why the reports show its score
    and weights sha256 instead. `allow` ([teacher] allow_weak_teacher) lets such a run go on.
    """
    chance = 1 / num_classes
    if allow or score > chance + CHANCE_MARGIN:
        return
    raise UsageError(
        f"the teacher scores {score:.2%} top-1 on its {samples} held-out validation samples, at or near "
        f"chance ({chance:.2%} for {num_classes} classes; refused up to {CHANCE_MARGIN * 100:g} points above it): "
        f"{WEAK_TEACHER_CAUSES}",
        "check the teacher's weights file and the data's preprocessing against how the teacher was "
        "trained; set [teacher] allow_weak_teacher = true to distill from it anyway",
    )


def evaluate(model: nn.Module, x: Inputs, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (predict(model, x, batch_size).argmax(dim=1) == y).float().mean().item()


def agreement(model: nn.Module, x: torch.Tensor, teacher_classes: torch.Tensor, batch_size: int = 256) -> float:
    """Share of samples in [0, 1] whose top-1 class is the teacher's."""
    return (predict(model, x, batch_size).argmax(dim=1) == teacher_classes).float().mean().item()


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over the last dimension (per sample, or per token for N×L×D)."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


class Validator:
    """The validation score of a model for one objective; `name` is its record key."""

    def __init__(self, objective: str, teacher: nn.Module, splits: DataSplits):
        self.name = score_name(objective, splits)
        self.x, self.y = splits.x_val, splits.y_val
        # The teacher's validation outputs are the reference every epoch: computed once.
        self.reference = predict(teacher, splits.x_val) if objective == "embedding" else None
        self.teacher_classes = predict(teacher, splits.x_val).argmax(dim=1) if self.name == AGREEMENT else None
        # Top-1 on labels; None where there are none to be right about (a teacher matches itself).
        self.teacher_score = self(teacher) if self.name == SCORE_NAMES["logits"] else None

    def __call__(self, model: nn.Module) -> float:
        if self.reference is not None:
            return mean_cosine(predict(model, self.x), self.reference)
        if self.teacher_classes is not None:
            return agreement(model, self.x, self.teacher_classes)
        return evaluate(model, self.x, self.y)

    def describe(self, value: float) -> str:
        """For progress bars and log lines."""
        return describe_score({self.name: value})


def describe_score(record: dict) -> str:
    """The validation score of an epoch record, for progress bars and log lines."""
    if "val_cosine" in record:
        return f"val cosine {record['val_cosine']:.4f}"
    if AGREEMENT in record:
        return f"val agreement with the teacher {record[AGREEMENT]:.2%}"
    return f"val top-1 {record['val_acc']:.2%}"
