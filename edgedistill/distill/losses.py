"""Knowledge-distillation losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from edgedistill.errors import UsageError

if TYPE_CHECKING:
    from edgedistill.distill.features import FeatureAdapters


class KDLoss(NamedTuple):
    total: torch.Tensor
    kd: torch.Tensor  # the soft-target term, already scaled by T²
    ce: torch.Tensor  # cross-entropy over the labelled samples only; 0 when there are none


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> KDLoss:
    """(1 - alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T)) + alpha · CE(s, labels).

    The T² factor keeps the soft-target gradients the same size whatever the temperature
    (Hinton et al., 2015). Labels of -1 mark unlabelled samples: they count in the KD term only.
    """
    t = temperature
    kd = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),  # log targets: no log(0) for confident teachers
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    labelled = labels >= 0 if labels is not None else None
    if labelled is not None and bool(labelled.any()):
        ce = F.cross_entropy(student_logits[labelled], labels[labelled])
    else:
        ce = student_logits.new_zeros(())
    return KDLoss((1 - alpha) * kd + alpha * ce, kd, ce)


class EmbeddingLoss(NamedTuple):
    total: torch.Tensor
    mse: torch.Tensor  # mean squared error over every element
    cosine: torch.Tensor  # mean over samples of 1 - cos(student, teacher)


def embedding_loss(
    student_emb: torch.Tensor, teacher_emb: torch.Tensor, mse_weight: float, cosine_weight: float
) -> EmbeddingLoss:
    """mse_weight · MSE(s, t) + cosine_weight · mean(1 - cos(s, t)), for embedding outputs.

    MSE pulls the student to the teacher's vectors including their length; the cosine term
    matches direction only, which is what retrieval by cosine similarity uses. Cosine is taken
    over the last dimension (N×D, or N×L×D per token). The teacher side is detached: the
    teacher is a fixed target.
    """
    if student_emb.shape != teacher_emb.shape:
        raise UsageError(
            f"embedding shapes differ: student {list(student_emb.shape)} vs teacher {list(teacher_emb.shape)}",
            "give the student an output of the teacher's embedding size",
        )
    target = teacher_emb.detach().to(student_emb.dtype)
    mse = F.mse_loss(student_emb, target)
    cosine = (1 - F.cosine_similarity(student_emb, target, dim=-1)).mean()
    return EmbeddingLoss(mse_weight * mse + cosine_weight * cosine, mse, cosine)


class FeatureLoss(NamedTuple):
    total: torch.Tensor  # Σ weight · MSE over the pairs
    terms: dict[str, torch.Tensor]  # unweighted MSE per adapter key, for logging


def feature_loss(
    student_feats: Mapping[str, torch.Tensor],
    teacher_feats: Mapping[str, torch.Tensor],
    adapters: FeatureAdapters,
) -> FeatureLoss:
    """Σ over pairs of weight · MSE(adapter(student feature), teacher feature).

    Features are keyed by module path (as FeatureTaps captures them); `adapters.pairs` says which
    student path goes with which teacher path and at what weight. Teacher features are detached.
    """
    terms: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for key, pair in adapters.pairs.items():
        if pair.student not in student_feats or pair.teacher not in teacher_feats:
            side, path = ("student", pair.student) if pair.student not in student_feats else ("teacher", pair.teacher)
            raise UsageError(f"no captured feature for {side} module {path!r}",
                             "run the forward with FeatureTaps on that path before the loss")
        s, t = adapters[key](student_feats[pair.student], teacher_feats[pair.teacher].detach())
        if s.shape != t.shape:
            raise UsageError(
                f"feature pair {pair.student!r} -> {pair.teacher!r}: adapted student {list(s.shape)} "
                f"vs teacher {list(t.shape)}",
                "the feature shapes changed since the adapters were built; rebuild them",
            )
        terms[key] = F.mse_loss(s, t.to(s.dtype))
        total = pair.weight * terms[key] if total is None else total + pair.weight * terms[key]
    if total is None:
        anything = next(iter(student_feats.values()), None)
        total = anything.new_zeros(()) if anything is not None else torch.zeros(())
    return FeatureLoss(total, terms)
