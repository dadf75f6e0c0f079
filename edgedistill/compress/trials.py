"""The bookkeeping every backend's INT8 fallbacks share: each candidate is measured on the
validation split (accuracy.AccuracyCheck), recorded in `tried`, and the first one within the
allowed drop is kept; when none is, the one that lost least (the earliest on a tie).

What the backend records in art.meta["quantization"] is `Trials.summary()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.compress.accuracy import AccuracyCheck, artifact_outputs


@dataclass
class Candidate:
    method: str
    record: dict[str, Any]  # its entry in `tried`
    value: Any  # what the backend keeps for it: a file path, an in-memory model


@dataclass
class Trials:
    accuracy: AccuracyCheck
    backend: str  # the probe's name for the runtime that measures a candidate
    tried: list[dict[str, Any]] = field(default_factory=list)
    best: Candidate | None = None
    _kept: dict[int, Candidate] = field(default_factory=dict)  # index in `tried` -> candidate

    @property
    def met(self) -> bool:
        return self.best is not None and bool(self.best.record["met"])

    def measure(self, method: str, path: Path, value: Any = None, **extra: Any) -> bool:
        """Run the candidate at `path` on the validation inputs here; True when it meets the
        allowed drop. `value` (default: the path) is what is kept if it is chosen."""
        outputs = artifact_outputs(self.backend, path, "int8", self.accuracy.inputs)
        record = self.accuracy.record(method, outputs, **extra)
        self.tried.append(record)
        candidate = Candidate(method, record, path if value is None else value)
        self._kept[len(self.tried) - 1] = candidate
        if self.best is None or record["drop_pt"] < self.best.record["drop_pt"]:
            self.best = candidate
        return bool(record["met"])

    def disqualify(self, reason: str) -> None:
        """The last candidate measured cannot be chosen (it is not what was asked for)."""
        record = self.tried[-1]
        record.update(met=False, eligible=False, reason=reason)
        if self.best is not None and self.best.record is record:
            self.best = self._best_eligible()

    def _best_eligible(self) -> Candidate | None:
        return self._kept.get(min((i for i, r in enumerate(self.tried) if "drop_pt" in r and r.get("eligible", True)),
                                  key=lambda i: self.tried[i]["drop_pt"], default=None))

    def skip(self, method: str, reason: str) -> None:
        """A fallback this backend does not have, or could not run: recorded, not measured."""
        self.tried.append({"method": method, "skipped": reason})

    def summary(self, **extra: Any) -> dict[str, Any]:
        """meta["quantization"]: the chosen method, whether it met the drop, every trial."""
        assert self.best is not None, "the default quantization is always measured first"
        return {"method": self.best.method, "met": self.met, "drop_pt": self.best.record["drop_pt"],
                "max_drop_pt": self.accuracy.max_drop_pt,
                "reference_score": round(self.accuracy.reference_score, 4),
                "scored_by": self.accuracy.scored_by, "split": "validation",
                "validation_samples": len(self.accuracy.reference),
                "tried": self.tried, **{k: v for k, v in self.best.record.items() if k == "float_nodes"}, **extra}


def default_only(backend: str, path: Path, accuracy: AccuracyCheck) -> dict[str, Any]:
    """meta["quantization"] of a backend without fallbacks: its one quantization, measured; the
    fallbacks asked for are recorded as not available when it misses."""
    trials = Trials(accuracy, backend)
    trials.measure("default", path)
    for method in accuracy.fallbacks:
        if not trials.met and method != "qat":  # qat is api.export's, for every backend
            trials.skip(method, f"not available for {backend}")
    return trials.summary()
