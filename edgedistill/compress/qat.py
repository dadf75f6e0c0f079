"""Quantization-aware training guided by the teacher, with PT2E (torchao's prepare/convert).

When post-training INT8 loses more accuracy than `[compress] int8_max_drop_pt` allows, the
student is fine-tuned with its quantization simulated: `torch.export` captures it, torchao's
`prepare_qat_pt2e` inserts fake-quantize nodes where ExecuTorch's XNNPACKQuantizer annotates
the graph (and simulates Conv+BatchNorm folding), the distillation loop trains it
`[compress] qat_epochs` epochs on the teacher's soft targets (the same KD loss, teacher cache,
seeding and best-on-validation choice as the distillation: trainer.distill), then
`convert_pt2e` turns the fake quantizers into quantize/dequantize nodes around int8 weights.

That converted graph is a prequantized source: `torch.onnx.export` writes it as a QDQ ONNX
(QuantizeLinear/DequantizeLinear), which onnxruntime, ort-mobile and OpenVINO take as their INT8
model as is, and `torch.export` as a program ExecuTorch lowers to XNNPACK without quantizing it
again. torchao and executorch are imported inside functions only; this module is imported by
api.export only when QAT runs.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgedistill.backends.base import package_version
from edgedistill.backends.common import first_line, quiet_stdout
from edgedistill.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgedistill.config import DistillConfig
    from edgedistill.data import DataSplits
    from edgedistill.data.inputs import Inputs

QUANTIZER = "XNNPACKQuantizer (torchao pt2e prepare_qat/convert)"
# Weights in [-64, 64], 7 bits as onnxruntime's reduce_range: onnxruntime's x86 int8 kernels
# sum pairs of uint8 x int8 products in 16 bits, which full-range weights overflow on CPUs
# without VNNI (AVX2). Measured on this task: a QAT student at 76.7 % val top-1 in PyTorch
# scored 52.2 % in onnxruntime with weights in [-127, 127] and 76.7 % with [-64, 64]
# (OpenVINO 77.8 / 76.7 %). One QAT student serves every backend, so it takes the range all run.
WEIGHT_RANGE = (-64, 64)
QUANTIZATION_CONFIG = ("get_symmetric_quantization_config(is_qat=True, is_per_channel=True, "
                       f"weight_qmin={WEIGHT_RANGE[0]}, weight_qmax={WEIGHT_RANGE[1]})")
# QAT fine-tunes a trained student: a tenth of the distillation's learning rate keeps it near
# the weights it starts from (its own cosine schedule then runs over the QAT epochs).
LR_FACTOR = 0.1


@dataclass
class QATStudent:
    """A converted (quantized) student: a module of quantize/dequantize nodes around int8
    weights, taking the inputs the float student takes (named ones by name)."""

    module: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)  # how it was made, for meta["quantization"]


def train_qat(teacher: nn.Module, student: nn.Module, splits: DataSplits, distill_cfg: DistillConfig,
              example: Inputs, *, epochs: int, seed: int, cache_dir: Path | None = None,
              notify: Callable[[str], None] | None = None, name: str = "student") -> QATStudent:
    """Fine-tune a fake-quantized copy of `student` `epochs` epochs with the KD loss from
    `teacher`, then convert it. `example`: inputs of the student's (two samples or more: BatchNorm
    trains on batches); `name` names the student in errors. The student itself is not changed."""
    from edgedistill.distill.defaults import resolve as resolve_defaults
    from edgedistill.distill.trainer import distill as train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    start = time.perf_counter()
    torch.manual_seed(seed)  # anything prepare draws; the trainer seeds again for training
    prepared = prepare(student, example, name=name)
    dc = resolve_defaults(distill_cfg, student)[0]
    # Logit KD only: hint losses tap named modules, which the exported graph does not keep.
    dc = dc.model_copy(update={"epochs": epochs, "lr": dc.lr * LR_FACTOR, "features": [], "patience": None,
                               "checkpoint_every_steps": None, "restart": True})
    with tempfile.TemporaryDirectory(prefix="edgedistill-qat-") as work:
        # The loop's checkpoint and weights go to a scratch folder: the export stage keeps the
        # artifacts, and an interrupted QAT simply runs again.
        # allow_weak_teacher: the distillation held the teacher to the run's setting already.
        result = train(teacher, prepared, splits, dc, Path(work), seed=seed,
                       cache_dir=cache_dir or Path(work) / "teacher", notify=notify, allow_weak_teacher=True)
    prepared.train(False)  # the best epoch's weights and observers, in eval mode
    try:
        with quiet_stdout():
            converted = convert_pt2e(prepared.inner)
    except Exception as e:  # noqa: BLE001 -- torchao raises anything; one line names it
        raise UsageError(f"QAT: convert_pt2e failed for the {name}: {type(e).__name__}: {first_line(str(e))}",
                         'leave "qat" out of [compress] int8_fallbacks for this student') from e
    score = result.student_val_acc if result.student_val_acc is not None else result.student_val_agreement
    meta = {
        "quantizer": QUANTIZER,
        "quantization_config": QUANTIZATION_CONFIG,
        "epochs": len(result.history),
        "lr": dc.lr,
        "batch_size": dc.batch_size,
        "temperature": dc.temperature,
        "alpha": dc.alpha,
        # The fake-quantized student's validation score in PyTorch, per epoch (the best is kept).
        "val_history": [round(r[name_of_score(r)], 6) for r in result.history],
        "val_score": score,
        "train_s": round(time.perf_counter() - start, 3),
        "torch": torch.__version__,
        "torchao": package_version("torchao"),
        "executorch": package_version("executorch"),
    }
    return QATStudent(_exported(converted, prepared.names, isinstance(example, dict)), meta)


def name_of_score(record: dict) -> str:
    return next(k for k in ("val_acc", "val_agreement", "val_cosine") if k in record)


def prepare(student: nn.Module, example: Inputs, *, name: str = "student") -> _Exported:
    """The student captured by torch.export (dynamic batch) with fake quantizers inserted by
    prepare_qat_pt2e; UsageError (exit 2) naming the student and why when it cannot be."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgedistill.exporters import _traced

    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    # Captured in eval mode, BatchNorm then folded into the convolution before it (its running
    # statistics, as inference computes it): QAT fine-tunes the folded weights. Simulating
    # Conv+BatchNorm in training instead (prepare_qat_pt2e's pattern rewrite, and convert's fold)
    # cost over 2 minutes per student here before the first step, exporting dozens of patterns.
    model = copy.deepcopy(student).eval()
    traced, args, names = _traced(model, example)
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in args)
    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(
        is_qat=True, is_per_channel=True, weight_qmin=WEIGHT_RANGE[0], weight_qmax=WEIGHT_RANGE[1]))
    try:
        with quiet_stdout():
            graph = torch.export.export(traced, args, dynamic_shapes={"args": shapes} if isinstance(example, dict)
                                        else shapes).module()
            _fuse_conv_bn_(graph)
    except Exception as e:  # noqa: BLE001 -- torch.export raises many types; all mean "cannot capture"
        raise UsageError(f"QAT: torch.export cannot capture the {name} ({type(student).__name__}): "
                         f"{type(e).__name__}: {first_line(str(e))}",
                         "make its forward free of data-dependent control flow, or leave \"qat\" out of "
                         "[compress] int8_fallbacks") from e
    try:
        with quiet_stdout():
            prepared = prepare_qat_pt2e(graph, quantizer)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"QAT: prepare_qat_pt2e failed for the {name} ({type(student).__name__}): "
                         f"{type(e).__name__}: {first_line(str(e))}",
                         'leave "qat" out of [compress] int8_fallbacks for this student') from e
    return _exported(prepared, names, isinstance(example, dict))


class _Exported(nn.Module):
    """A torch.export graph as a module the distillation loop can train and evaluate, and the
    exporters export again (one input: forward(x), as the student's).

    An exported graph refuses train()/eval(): BatchNorm and dropout are ops in it, which
    torchao's move_exported_model_to_train/_eval rewrite; this module does that instead.
    """

    def __init__(self, graph: torch.fx.GraphModule, names: list[str]):
        super().__init__()
        self.inner, self.names = graph, list(names)
        # Rewriting the mode exports pattern graphs (a second or more each time, and the loop
        # switches modes every epoch): done only where an op depends on the mode.
        self._moded = any(n.op == "call_function" and ("dropout" in str(n.target) or "batch_norm" in str(n.target))
                          for n in graph.graph.nodes)
        self.training = False  # prepare() captures the student in eval mode

    def train(self, mode: bool = True) -> _Exported:
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        if self._moded and mode != self.training:
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.inner)
        self.training = mode  # not recursive: the graph itself refuses train()
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self.inner(x)


class _ExportedNamed(_Exported):
    """Named inputs (model(**x), as the loop and data.inputs.Positional call it), passed on by
    position in the order the graph was captured with."""

    def forward(self, **named: torch.Tensor) -> Any:
        return self.inner(*[named[n] for n in self.names])


def _exported(graph: torch.fx.GraphModule, names: list[str], named: bool) -> _Exported:
    return (_ExportedNamed if named else _Exported)(graph, names)
