"""The accuracy an INT8 artifact may lose: top-1 on the validation split against the FP32 student.

A minimal form of the contract between the quantization fallbacks (issue 14): the FP32
student's outputs on the validation inputs are the reference; an artifact's outputs on the same
inputs are scored by top-1 on the labels, or, where the data has none, by top-1 agreement with
the reference's argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from edgedistill.data import DataSplits


@dataclass
class AccuracyCheck:
    inputs: np.ndarray | dict[str, np.ndarray]  # validation inputs, by name in the model's input order
    labels: np.ndarray | None  # None: no labels, agreement with the reference's argmax is scored
    reference: np.ndarray  # the FP32 student's outputs on `inputs`
    max_drop_pt: float

    def score(self, outputs: np.ndarray) -> float:
        """Top-1 in percent: on the labels, or agreement with the reference's argmax."""
        predicted = np.asarray(outputs).argmax(-1)
        if self.labels is None:
            return float((predicted == self.reference.argmax(-1)).mean() * 100)
        labelled = self.labels >= 0
        return float((predicted[labelled] == self.labels[labelled]).mean() * 100)

    def drop_pt(self, outputs: np.ndarray) -> float:
        """Top-1 points lost against the FP32 student (negative: gained)."""
        return self.score(self.reference) - self.score(outputs)

    def meets(self, outputs: np.ndarray) -> bool:
        return self.drop_pt(outputs) <= self.max_drop_pt

    @classmethod
    def for_student(cls, student: nn.Module, splits: DataSplits, max_drop_pt: float) -> AccuracyCheck:
        from edgedistill.data.inputs import in_forward_order
        from edgedistill.distill.trainer import predict

        x = splits.x_val
        inputs = ({k: v.numpy() for k, v in in_forward_order(student, x).items()} if isinstance(x, dict)
                  else x.numpy())
        labels = splits.y_val.numpy() if splits.y_val is not None else None
        if labels is not None and not (labels >= 0).any():  # labels < 0: unlabelled
            labels = None
        return cls(inputs, labels, predict(student, x).numpy(), max_drop_pt)
