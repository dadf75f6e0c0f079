"""The "qat" INT8 fallback of the export stage (api.export).

After a backend has made its INT8 artifact (post-training quantization, and the fallbacks that
backend has), `meta["quantization"]` says whether it met `[compress] int8_max_drop_pt`. When it
did not and "qat" is in `[compress] int8_fallbacks`, the student is trained quantization-aware
from the teacher (compress/qat.py), once per role for the whole export; its converted graph is
exported once per intermediate kind (a QDQ ONNX, a quantized program) and handed to the same
backend as a prequantized source. The new artifact's outputs on the validation split are taken
in a fresh runtime process, like verification's; whichever of the two artifacts loses fewer
top-1 points is kept (the other's files are removed), and `meta["quantization"]["tried"]`
records both. The kept artifact is then verified by api.export like every artifact.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.artifacts import Artifact, atomic_write_bytes
from edgedistill.backends.base import not_runnable
from edgedistill.errors import ExportError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from edgedistill.compress.accuracy import AccuracyCheck
    from edgedistill.compress.qat import QATStudent

DEFAULT_METHOD = "default"  # the backend's own post-training quantization, where it recorded nothing


@dataclass
class QATFallback:
    """One per export: `train(role, model)` makes a role's QAT student from its FP32 model
    (compress.qat.train_qat)."""

    accuracy: AccuracyCheck
    train: Callable[[str, Any], QATStudent]
    example: Any  # one sample of the student's inputs, for the exporters
    folder: Path  # the export stage's folder
    test_inputs: Any  # the held-out inputs verification runs (torch Inputs)
    note: Callable[[str], None] = lambda s: None
    _students: dict[str, QATStudent] = field(default_factory=dict)
    _references: dict[str, np.ndarray] = field(default_factory=dict)
    _sources: dict[tuple[str, str], Artifact] = field(default_factory=dict)
    _scratch: tempfile.TemporaryDirectory | None = None

    def __call__(self, art: Artifact, backend: ModuleType, *, role: str, kind: str, model: Any,
                 export_kw: dict[str, Any]) -> Artifact:
        """The INT8 artifact to keep: `art`, or the QAT one when `art` misses the budget and
        the QAT one loses fewer points; `meta["quantization"]` says which and what was tried."""
        if not_runnable(art.backend) is not None:
            return art  # nothing here can run it, so nothing can measure it either
        record = art.meta.get("quantization") or self._record_default(art)
        art.meta["quantization"] = record
        if record["met"]:
            return art
        reason = None if getattr(backend, "TAKES_PREQUANTIZED", False) else getattr(
            backend, "PREQUANTIZED_REASON", f"the {art.backend} backend does not take a prequantized source")
        if reason is not None:
            record["tried"].append({"method": "qat", "skipped": reason})
            self.note(f"{art.name}: INT8 top-1 drop {_chosen_drop(record):.2f} pt > {record['max_drop_pt']:g} pt; "
                      f"QAT not tried: {reason}")
            return art
        student = self._student(role, model)
        qat_art = backend.export(self._source(role, kind), self.folder / art.backend / "qat",
                                 precision="int8", calibration=None, **export_kw)
        qat_art.form = art.form  # a pruned student's QAT artifact is still that form's
        for key in ("inputs", "dynamic_sequence"):
            if key in self._sources[(role, kind)].meta:
                qat_art.meta.setdefault(key, self._sources[(role, kind)].meta[key])
        drop = self.accuracy.drop_pt(self.outputs(qat_art))
        entry = {"method": "qat", "drop_pt": round(drop, 4), "epochs": student.meta["epochs"],
                 "train_s": student.meta["train_s"]}
        before = _chosen_drop(record)
        record["tried"].append(entry)
        keep_qat = drop < before  # a tie keeps the artifact made without training
        self.note(f"{art.name}: INT8 top-1 drop {before:.2f} pt > {record['max_drop_pt']:g} pt; "
                  f"QAT ({student.meta['epochs']} epochs, {student.meta['train_s']:.0f} s): {drop:.2f} pt; "
                  f"keeping {'qat' if keep_qat else record['method']}")
        if not keep_qat:
            _remove(qat_art)
            return art
        _remove(art)
        qat_art.meta["quantization"] = {**record, "method": "qat", "met": drop <= self.accuracy.max_drop_pt,
                                        "drop_pt": round(drop, 4), "qat": student.meta}
        return qat_art

    def reference(self, art: Artifact, default: Path) -> np.ndarray:
        """What verification compares `art` with: for a QAT artifact the converted QAT student's
        outputs in PyTorch on the held-out inputs (the model it was exported from: QAT retrains
        the student, so the FP32 student's outputs would test the training, not the export);
        for any other, the `default` file's (the FP32 model's)."""
        if art.meta.get("quantization", {}).get("method") != "qat":
            return np.load(default)
        from edgedistill.distill.teacher_cache import predict

        role = art.role
        if role not in self._references:
            self._references[role] = predict(self._student(role).module, self.test_inputs).numpy()
        art.meta["quantization"]["verified_against"] = "the QAT student in PyTorch (converted PT2E graph)"
        return self._references[role]

    def files(self) -> list[Path]:
        """The QAT intermediates written: part of the export stage."""
        return [f for a in self._sources.values() for f in a.files()]

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # ---------------------------------------------------------------- pieces

    def _student(self, role: str, model: Any = None) -> QATStudent:
        """The role's QAT student, trained from `model` on first need."""
        if role not in self._students:
            self._students[role] = self.train(role, model)
        return self._students[role]

    def _source(self, role: str, kind: str) -> Artifact:
        """The QAT student as the intermediate `kind` names, exported once: a QDQ ONNX with a
        dynamic batch, or a program with a batch of 1 (ExecuTorch and LiteRT fix it anyway)."""
        if (role, kind) not in self._sources:
            from edgedistill.exporters import export_onnx, export_program

            student = self._student(role)
            path = self.folder / "intermediate" / "qat" / f"{role}.{'onnx' if kind == 'onnx' else 'pt2'}"
            # Named inputs in the float student's forward order, as its own exports have them (a
            # .pte takes them by position); the QAT module's forward(**named) gives no order.
            example = ({n: self.example[n] for n in student.module.names} if isinstance(self.example, dict)
                       else self.example)
            try:
                if kind == "onnx":
                    source = export_onnx(student.module, example, path, role=role, dynamic_batch=True)
                else:
                    source = export_program(student.module, example, path, role=role, dynamic_batch=False)
            except ExportError as e:  # the same exporters as the float model's: say which model failed
                raise ExportError(f"QAT {role}: {e.message}", e.hint) from e
            source.precision = "int8"  # type: ignore[assignment] -- quantized: backends take it as is
            source.meta.update(quantized_by="qat", quantizer=student.meta["quantizer"],
                               quantization_config=student.meta["quantization_config"])
            self._sources[(role, kind)] = source
        return self._sources[(role, kind)]

    def _record_default(self, art: Artifact) -> dict[str, Any]:
        """meta["quantization"] for a backend that recorded none: its own PTQ, measured here."""
        drop = self.accuracy.drop_pt(self.outputs(art))
        return {"method": DEFAULT_METHOD, "met": drop <= self.accuracy.max_drop_pt,
                "max_drop_pt": self.accuracy.max_drop_pt, "drop_pt": round(drop, 4),
                "tried": [{"method": DEFAULT_METHOD, "drop_pt": round(drop, 4)}]}

    def outputs(self, art: Artifact) -> np.ndarray:
        """`art`'s outputs on the validation inputs, from its runtime in a fresh process (as
        verification runs it: the native runner for a .pte where it is built)."""
        from edgedistill.api import artifact_outputs

        work = self._work()
        inputs = work / ("val_inputs.npz" if isinstance(self.accuracy.inputs, dict) else "val_inputs.npy")
        if not inputs.exists():
            buf = io.BytesIO()
            if isinstance(self.accuracy.inputs, dict):
                np.savez(buf, **self.accuracy.inputs)
            else:
                np.save(buf, self.accuracy.inputs)
            atomic_write_bytes(inputs, buf.getvalue())
        return artifact_outputs(art, inputs, work, "measuring its accuracy on the validation split")[0]

    def _work(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="edgedistill-accuracy-")
        return Path(self._scratch.name)


def _chosen_drop(record: dict[str, Any]) -> float:
    """The drop of the method a record chose: its own "drop_pt", else that method's attempt."""
    if "drop_pt" in record:
        return float(record["drop_pt"])
    return float(next(t["drop_pt"] for t in reversed(record["tried"])
                      if t.get("method") == record["method"] and "drop_pt" in t))


def _remove(art: Artifact) -> None:
    config = art.meta.get("required_operators_config")  # an .ort's companion
    for f in [*art.files(), *([Path(config)] if config else [])]:
        f.unlink(missing_ok=True)
