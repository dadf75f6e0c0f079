"""How much top-1 an INT8 artifact loses against the FP32 student, measured on the validation
split (never the test split the bench scores, so choosing a quantization cannot tune to it).

An AccuracyCheck holds the validation inputs, their labels and the FP32 student's outputs on
them; a backend runs a candidate artifact on the inputs in-process (`artifact_outputs`) and asks
whether its drop is within `max_drop_pt`. Without labels the score is top-1 agreement with the
FP32 student's argmax, so the reference scores 100 and the drop is the disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edgedistill.config import INT8_FALLBACKS

if TYPE_CHECKING:
    from torch import nn

    from edgedistill.data.datasets import DataSplits

Arrays = Union[np.ndarray, dict[str, np.ndarray]]  # one input, or name -> array in forward order


@dataclass
class AccuracyCheck:
    inputs: Arrays  # validation inputs, N first
    labels: np.ndarray | None  # N class indices; None (or every entry < 0): no labels
    reference: np.ndarray  # the FP32 student's outputs on `inputs`, N x classes
    max_drop_pt: float  # top-1 points a quantized artifact may lose against `reference`
    # [compress] int8_fallbacks: what a backend tries, in this order, when its default misses.
    fallbacks: tuple[str, ...] = INT8_FALLBACKS
    reference_score: float = field(init=False)

    def __post_init__(self) -> None:
        self.reference = np.asarray(self.reference)
        self.fallbacks = tuple(self.fallbacks)
        n = count(self.inputs)
        if len(self.reference) != n:
            raise ValueError(f"reference has {len(self.reference)} rows for {n} inputs")
        if self.labels is not None:
            self.labels = np.asarray(self.labels).astype(np.int64)
            if len(self.labels) != n:
                raise ValueError(f"labels has {len(self.labels)} entries for {n} inputs")
            if not (self.labels >= 0).any():
                self.labels = None  # unlabelled data: agreement with the reference instead
        self.reference_score = self.score(self.reference)

    @property
    def scored_by(self) -> str:
        return "top-1 on labels" if self.labels is not None else "top-1 agreement with the FP32 student"

    def score(self, outputs: np.ndarray) -> float:
        """Top-1 in % of `outputs` (N x classes): against the labels (rows labelled < 0 left
        out), or against the reference's argmax when there are none."""
        predicted = np.asarray(outputs).reshape(len(self.reference), -1).argmax(-1)
        if self.labels is None:
            return float((predicted == self.reference.reshape(len(self.reference), -1).argmax(-1)).mean() * 100)
        labelled = self.labels >= 0
        return float((predicted[labelled] == self.labels[labelled]).mean() * 100)

    def drop_pt(self, outputs: np.ndarray) -> float:
        """Top-1 points lost against the FP32 student (negative: the artifact scores higher)."""
        return self.reference_score - self.score(outputs)

    def meets(self, outputs: np.ndarray) -> bool:
        # A hair of slack for float rounding of the two percentages, nothing more.
        return self.drop_pt(outputs) <= self.max_drop_pt + 1e-9

    def record(self, method: str, outputs: np.ndarray, **extra: Any) -> dict[str, Any]:
        """One entry of meta["quantization"]["tried"]: the method and its measured drop."""
        return {"method": method, "drop_pt": round(self.drop_pt(outputs), 4),
                "score": round(self.score(outputs), 4), "met": self.meets(outputs), **extra}

    @classmethod
    def for_student(cls, student: nn.Module, splits: DataSplits, max_drop_pt: float,
                    fallbacks: tuple[str, ...] | list[str] = INT8_FALLBACKS) -> AccuracyCheck:
        """The check on the validation split, its reference the torch student's outputs."""
        import torch

        from edgedistill.data.inputs import in_forward_order, run, split

        training = student.training
        student.eval()  # as it was exported
        try:
            with torch.no_grad():
                outputs = [run(student, batch) for batch in split(splits.x_val, 256)]
        finally:
            student.train(training)
        reference = torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in outputs]).float().numpy()
        x = in_forward_order(student, splits.x_val) if isinstance(splits.x_val, dict) else splits.x_val
        inputs = ({k: np.ascontiguousarray(v.numpy()) for k, v in x.items()} if isinstance(x, dict)
                  else np.ascontiguousarray(x.numpy()))
        labels = None if splits.y_val is None else splits.y_val.numpy()
        return cls(inputs=inputs, labels=labels, reference=reference, max_drop_pt=max_drop_pt,
                   fallbacks=tuple(fallbacks))


def count(x: Arrays) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def as_feeds(x: Arrays, names: list[str]) -> dict[str, np.ndarray]:
    """Inputs keyed by the artifact's own input names, by position (a .pte or .tflite keeps
    positions, not the data's names)."""
    arrays = list(x.values()) if isinstance(x, dict) else [x]
    if len(arrays) != len(names):
        raise ValueError(f"the artifact takes inputs {names}; the validation data has {len(arrays)}")
    return dict(zip(names, arrays))


def artifact_outputs(backend: str, path: Any, precision: str, inputs: Arrays, threads: int = 2) -> np.ndarray:
    """The artifact's first output on every input, run here one sample per call by the same
    Session classes the probe uses (so an int8 .tflite is fed and read as the bench feeds it)."""
    from edgedistill.probe import runtimes

    session = runtimes.load(backend, str(path), threads=threads, precision=precision)
    feeds = as_feeds(inputs, [spec["name"] for spec in session.inputs])
    dtypes = {spec["name"]: np.dtype(spec["dtype"]) for spec in session.inputs}
    # Floats as the artifact declares them; integers as they are (a LiteRT session narrows
    # int64 token ids itself, refusing values that do not fit).
    feeds = {k: np.ascontiguousarray(v, dtype=dtypes[k] if v.dtype.kind == "f" else None)
             for k, v in feeds.items()}
    outs = [session.run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(count(inputs))]
    return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])
