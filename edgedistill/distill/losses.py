"""Knowledge-distillation losses."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


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
