"""The quality metric of a run: how good a model's outputs are, in the task's own terms.

Computed in the parent process, on numpy arrays: the outputs a probe wrote for the held-out
inputs, the labels, and the teacher's PyTorch outputs on the same inputs.

- "top1": top-1 accuracy on the labels (classifiers);
- "agreement": top-1 agreement with the teacher's answers (classifiers without labels: what
  "auto" picks for them, the score their distillation was validated by);
- "cosine": mean cosine to the teacher's embeddings (the teacher's own value is 1.0);
- "recall@10": per sample, the share of its 10 nearest neighbours (cosine, itself excluded)
  among the held-out set under the model's embeddings that are also among its 10 nearest under
  the teacher's, averaged: what retrieval on the device returns (1.0 for the teacher);
- "pkg.mod:fn": the user's own, `fn(outputs, labels, teacher_outputs) -> float`, higher is better.

Every metric is "higher is better"; a drop is teacher minus model, in the metric's units.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgedistill.errors import UsageError

BUILTIN = ("top1", "agreement", "cosine", "recall@10")
AUTO = "auto"
RECALL_K = 10
# What `quality = "..."` may say (config.py validates against this and names the forms).
ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
FORMS = '"auto", "top1", "agreement", "cosine", "recall@10" or a function "pkg.mod:fn"'
# The user metric is checked once before training on this many validation samples.
CHECK_SAMPLES = 8


class NotMeasured(Exception):
    """A metric that cannot be computed on these arrays; the message is the reason."""


def valid_spec(value: str) -> bool:
    return value in (AUTO, *BUILTIN) or bool(ENTRYPOINT.match(value))


def is_user_metric(name: str) -> bool:
    return name not in BUILTIN


def primary_metric(spec: str, objective: str) -> str:
    """The metric a run is judged by: "auto" is top-1 for class scores, cosine for embeddings."""
    if spec == AUTO:
        return "cosine" if objective == "embedding" else "top1"
    return spec


def task_metrics(primary: str, objective: str) -> list[str]:
    """Every metric recorded for the task, the primary first: an embedding task records both
    cosine and recall@10 whichever is primary."""
    names = [primary]
    if objective == "embedding":
        names += [m for m in ("cosine", "recall@10") if m != primary]
    return names


# ---------------------------------------------------------------- the built-in metrics


def labelled(labels: np.ndarray | None) -> np.ndarray | None:
    """The labels, or None when there are none (-1 marks a sample without a label)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    return labels if (labels >= 0).any() else None


def top1(outputs: np.ndarray, labels: np.ndarray | None) -> tuple[float, int]:
    """Top-1 accuracy over the labelled samples (argmax over the LAST axis: class scores of
    shape (N, C), or (N, seq, C) with one label per position); the value and how many counted."""
    labels = labelled(labels)
    if labels is None:
        raise NotMeasured("no labels were given with the inputs")
    preds = np.asarray(outputs).argmax(axis=-1)
    if preds.shape != labels.shape:
        raise NotMeasured(f"outputs of shape {list(np.shape(outputs))} give predictions of shape "
                          f"{list(preds.shape)}, the labels have shape {list(labels.shape)}")
    keep = labels >= 0
    return float((preds[keep] == labels[keep]).mean()), int(keep.sum())


def agreement(outputs: np.ndarray, teacher: np.ndarray | None) -> tuple[float, int]:
    """Top-1 agreement with the teacher's answers on the same samples (argmax over the last axis)."""
    _check_same_shape(outputs, teacher)
    return float((np.asarray(outputs).argmax(-1) == np.asarray(teacher).argmax(-1)).mean()), len(outputs)


def cosine_per_vector(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine over the last axis, one value per vector (per sample, or per token); a zero vector
    has cosine 0 with anything (torch's eps convention)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)
    return np.einsum("...d,...d->...", a, b) / norms


def _check_same_shape(outputs: np.ndarray, teacher: np.ndarray | None) -> None:
    if teacher is None:
        raise NotMeasured("no teacher outputs on the same inputs to compare with")
    if np.shape(outputs) != np.shape(teacher):
        raise NotMeasured(f"outputs of shape {list(np.shape(outputs))}, the teacher's {list(np.shape(teacher))}")


def cosine(outputs: np.ndarray, teacher: np.ndarray | None) -> tuple[float, int]:
    """Mean cosine to the teacher's vectors on the same samples."""
    _check_same_shape(outputs, teacher)
    return float(cosine_per_vector(outputs, teacher).mean()), len(outputs)


def nearest(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each sample's k nearest others by cosine distance (itself excluded), shape (N, k).
    A sample's vector is its output flattened (token embeddings: all its tokens)."""
    from sklearn.neighbors import NearestNeighbors

    flat = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(flat)
    return index.kneighbors(return_distance=False)  # no query: each point's neighbours but itself


def recall_at_k(outputs: np.ndarray, teacher: np.ndarray | None, k: int = RECALL_K) -> tuple[float, int]:
    """Mean overlap of each sample's k nearest neighbours under the model with its k nearest
    under the teacher, within the held-out set."""
    _check_same_shape(outputs, teacher)
    n = len(outputs)
    if n < k + 1:
        raise NotMeasured(f"recall@{k} needs at least {k + 1} held-out samples (each has {k} neighbours "
                          f"besides itself); found {n}")
    mine, theirs = nearest(outputs, k), nearest(teacher, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(mine.tolist(), theirs.tolist())]
    return float(np.mean(overlap)), n


# ---------------------------------------------------------------- user metrics


def load_user_metric(spec: str) -> Callable:
    """Import "pkg.mod:fn" (the user's explicit choice in their config, like a model entrypoint)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own code failing on import
        raise UsageError(f"quality metric {spec!r}: cannot import module {module_name!r} "
                         f"({type(e).__name__}: {e})",
                         "check the spelling, and that the module is installed or on PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"quality metric {spec!r}: module {module_name!r} has no callable {attr!r}",
                         "name a function fn(outputs, labels, teacher_outputs) -> float") from None
    return fn


def call_user_metric(fn: Callable, spec: str, outputs: np.ndarray, labels: np.ndarray | None,
                     teacher: np.ndarray | None) -> float:
    """The user's value as a float; a metric that raises or returns anything but a finite number
    is a usage error naming what it returned."""
    try:
        value = fn(outputs, labels, teacher)
    except Exception as e:  # the user's code: say which metric failed and how
        raise UsageError(f"quality metric {spec!r} raised {type(e).__name__}: {e}",
                         "it is called as fn(outputs, labels, teacher_outputs) with numpy arrays "
                         "(labels None when there are none) and must return a float") from None
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number or not math.isfinite(float(value)):
        shown = f"an array of shape {list(value.shape)}" if isinstance(value, np.ndarray) else repr(value)[:60]
        raise UsageError(f"quality metric {spec!r} must return a finite number (higher is better), "
                         f"returned {shown} ({type(value).__name__})",
                         "return a float, e.g. float(score)")
    return float(value)


def check_user_metric(spec: str, teacher_outputs: np.ndarray, labels: np.ndarray | None) -> float:
    """Call a user metric once on the teacher's outputs for a few samples (before any training):
    one that cannot be imported, raises or returns a non-number stops the run (exit 2)."""
    fn = load_user_metric(spec)
    return call_user_metric(fn, spec, teacher_outputs, labelled(labels), teacher_outputs)


# ---------------------------------------------------------------- a task: metrics + references


@dataclass
class Task:
    """What every artifact of a run is scored by, on the same held-out samples.

    `teacher_outputs`: the reference's outputs (the PyTorch teacher's on the held-out split, or
    `bench PATH`'s --reference model's); `labels`: -1 marks a sample without one."""

    metric: str
    labels: np.ndarray | None = None
    teacher_outputs: np.ndarray | None = None
    others: list[str] = field(default_factory=list)
    _fn: Callable | None = None
    _teacher: dict = field(default_factory=dict)

    @classmethod
    def for_run(cls, spec: str, objective: str, labels: np.ndarray | None,
                teacher_outputs: np.ndarray | None) -> Task:
        primary = primary_metric(spec, objective)
        if spec == AUTO and primary == "top1" and labelled(labels) is None:
            primary = "agreement"  # no labels: the teacher's answers are the reference
        names = task_metrics(primary, objective)
        return cls(primary, labels, teacher_outputs, names[1:])

    @property
    def names(self) -> list[str]:
        return [self.metric, *self.others]

    def _value(self, name: str, outputs: np.ndarray) -> tuple[float, int]:
        if name == "top1":
            return top1(outputs, self.labels)
        if name == "agreement":
            return agreement(outputs, self.teacher_outputs)
        if name == "cosine":
            return cosine(outputs, self.teacher_outputs)
        if name == "recall@10":
            return recall_at_k(outputs, self.teacher_outputs, RECALL_K)
        if self._fn is None:
            self._fn = load_user_metric(name)
        return call_user_metric(self._fn, name, outputs, labelled(self.labels), self.teacher_outputs), len(outputs)

    def teacher_value(self, name: str) -> tuple[float | None, str | None]:
        """The reference's own value on the same samples (cosine and recall@10: 1.0 by
        definition), or None and why not."""
        if name not in self._teacher:
            if self.teacher_outputs is None:
                self._teacher[name] = (None, "no reference outputs on the same inputs")
            else:
                try:
                    self._teacher[name] = (self._value(name, self.teacher_outputs)[0], None)
                except NotMeasured as e:
                    self._teacher[name] = (None, str(e))
                except UsageError as e:
                    self._teacher[name] = (None, e.message)
        return self._teacher[name]

    def _one(self, name: str, outputs: np.ndarray | None) -> dict:
        teacher, why_not = self.teacher_value(name)
        if outputs is None:
            return {"value": None, "teacher": teacher, "drop": None, "measured": False,
                    "reason": "the model's outputs were not recorded"}
        try:
            value, n = self._value(name, outputs)
        except NotMeasured as e:
            return {"value": None, "teacher": teacher, "drop": None, "measured": False, "reason": str(e)}
        except UsageError as e:  # a user metric that fails on these outputs: checked before training,
            # so this is the artifact's outputs it cannot score; never a number made up for it
            return {"value": None, "teacher": teacher, "drop": None, "measured": False, "reason": e.message}
        record = {"value": value, "teacher": teacher, "n": n, "measured": True,
                  "drop": None if teacher is None else teacher - value}
        if teacher is None:
            record["teacher_reason"] = why_not
        return record

    def measure(self, outputs: np.ndarray | None) -> dict:
        """The results' `quality` block: the primary metric's fields at the top, every metric of
        the task (primary included) under `metrics`."""
        metrics = {name: self._one(name, outputs) for name in self.names}
        return {"metric": self.metric, **metrics[self.metric], "metrics": metrics}

    def reference(self) -> dict:
        """results["reference"]["quality"]: the metric and the teacher's value of each."""
        values = {name: self.teacher_value(name)[0] for name in self.names}
        n = None if self.teacher_outputs is None else len(self.teacher_outputs)
        return {"metric": self.metric, "teacher": values[self.metric], "metrics": values, "n": n}


def describe(quality: dict | None) -> str:
    """'cosine 0.9876 (teacher 1.0000)', or why it was not measured."""
    if not quality:
        return "quality not recorded"
    if not quality.get("measured"):
        return f"{quality.get('metric')} not measured ({quality.get('reason')})"
    teacher = quality.get("teacher")
    return f"{quality['metric']} {quality['value']:.4f}" + ("" if teacher is None else f" (teacher {teacher:.4f})")
