"""Students derived from the teacher instead of written by hand.

"prune:<width>" keeps `width` of the channels of every prunable layer (torch-pruning, L2
magnitude), "shallow:<k>" keeps every k-th block of the teacher's largest stack of identical
blocks (as DistilBERT kept every other BERT layer). Both start from the teacher's own weights,
which is why they distill faster than a student from scratch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgedistill.backends.common import first_line
from edgedistill.data.inputs import Inputs, run, take
from edgedistill.errors import UsageError

DERIVED_FORMS = '"prune:<width>" (0 < width < 1, e.g. prune:0.5) or "shallow:<k>" (integer k >= 2)'


@dataclass
class Derived:
    student: nn.Module
    summary: str  # one line: what was kept, params (and MACs) before and after


def is_derived(spec: str) -> bool:
    return spec.startswith(("prune:", "shallow:"))


def derive_student(spec: str, teacher: nn.Module, input_shape: tuple[int, ...] | Inputs) -> Derived:
    """Build the student a "prune:"/"shallow:" spec names from a copy of the teacher."""
    kind, _, arg = spec.partition(":")
    if not any(p.numel() for p in teacher.parameters()):
        raise UsageError(f"student spec {spec!r}: the teacher ({type(teacher).__name__}) has no weights "
                         "to copy (an ONNX teacher is a black box)",
                         "give a student entrypoint (pkg.mod:factory) instead")
    if kind == "prune":
        return prune_student(teacher, _width(spec, arg), input_shape)
    if kind == "shallow":
        return shallow_student(teacher, _stride(spec, arg))
    raise UsageError(f"student spec {spec!r} is not understood; expected {DERIVED_FORMS}")


def _width(spec: str, arg: str) -> float:
    try:
        width = float(arg)
    except ValueError:
        width = float("nan")
    if not 0 < width < 1:  # also false for NaN
        raise UsageError(f"student spec {spec!r}: width must be a number between 0 and 1 "
                         f"(exclusive), found {arg!r}", "e.g. prune:0.5 keeps half the channels")
    return width


def _stride(spec: str, arg: str) -> int:
    if not arg.isdigit() or int(arg) < 2:
        raise UsageError(f"student spec {spec!r}: k must be an integer >= 2, found {arg!r}",
                         "e.g. shallow:2 keeps blocks 0, 2, 4, …")
    return int(arg)


# ---------------------------------------------------------------- prune


def prune_student(teacher: nn.Module, width: float, input_shape: tuple[int, ...] | Inputs) -> Derived:
    import torch_pruning as tp

    student = copy.deepcopy(teacher).eval()
    example = torch.zeros((1, *input_shape)) if isinstance(input_shape, tuple) else take(input_shape, slice(0, 1))
    linears = [m for m in student.modules() if isinstance(m, nn.Linear)]
    # The classifier's outputs are the classes: pruning them would change the task.
    ignored = linears[-1:]
    with torch.no_grad():
        before_out = run(student, example)
    macs_before, params_before = tp.utils.count_ops_and_params(student, example)
    try:  # not under no_grad: torch-pruning traces the dependency graph through autograd
        pruner = tp.pruner.MetaPruner(
            student, example, importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=1 - width, ignored_layers=ignored, global_pruning=False,
        )
        pruner.step()
        with torch.no_grad():
            after_out = run(student, example)
    except Exception as e:  # torch-pruning fails in many ways on graphs it cannot trace
        raise UsageError(f"student spec 'prune:{width:g}': torch-pruning cannot prune this teacher "
                         f"({type(e).__name__}: {first_line(str(e), 200)})",
                         "give a student entrypoint (pkg.mod:factory) instead") from e
    macs_after, params_after = tp.utils.count_ops_and_params(student, example)
    if after_out.shape != before_out.shape:
        raise UsageError(f"student spec 'prune:{width:g}': the pruned copy outputs "
                         f"{tuple(after_out.shape)}, the teacher {tuple(before_out.shape)}")
    summary = (f"student prune:{width:g} of the teacher: params {params_before / 1e6:.3f} M -> "
               f"{params_after / 1e6:.3f} M ({params_after / params_before:.1%}), MACs "
               f"{macs_before / 1e6:.1f} M -> {macs_after / 1e6:.1f} M")
    return Derived(student, summary)


# ---------------------------------------------------------------- shallow


def _same_type_stacks(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """(qualifying stacks, description of every candidate container) in module order."""
    stacks, candidates = [], []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.children())
        types = sorted({type(c).__name__ for c in children})
        candidates.append(f"{name or '(root)'}: {len(children)} × {'/'.join(types) or 'nothing'}")
        if len(children) >= 2 and len(types) == 1:
            stacks.append((name, module))
    return stacks, candidates


def shallow_student(teacher: nn.Module, k: int) -> Derived:
    student = copy.deepcopy(teacher).eval()
    stacks, candidates = _same_type_stacks(student)
    if not stacks:
        raise UsageError(f"student spec 'shallow:{k}': the teacher has no stack of identical blocks "
                         f"(an nn.ModuleList/nn.Sequential whose children share one type); "
                         f"candidates: {'; '.join(candidates) or 'none'}",
                         "use prune:<width> or a student entrypoint instead")
    # The largest stack is the body (e.g. transformer layers); first in module order on a tie.
    name, stack = max(stacks, key=lambda s: len(s[1]))
    blocks = list(stack.children())
    kept = list(range(0, len(blocks), k))
    shorter = nn.Sequential(*[blocks[i] for i in kept]) if isinstance(stack, nn.Sequential) \
        else nn.ModuleList([blocks[i] for i in kept])
    params_before = sum(p.numel() for p in student.parameters())
    if name:
        parent_name, _, attr = name.rpartition(".")
        setattr(student.get_submodule(parent_name), attr, shorter)
    else:
        student = shorter  # the teacher itself is the stack
    _sync_depth(student, kept, len(blocks))
    params_after = sum(p.numel() for p in student.parameters())
    summary = (f"student shallow:{k} of the teacher: {name or '(root)'} keeps blocks "
               f"{', '.join(map(str, kept))} of {len(blocks)}; params {params_before / 1e6:.3f} M -> "
               f"{params_after / 1e6:.3f} M ({params_after / params_before:.1%})")
    return Derived(student, summary)


def _sync_depth(student: nn.Module, kept: list[int], depth: int) -> None:
    """Make a transformers config (copied with the teacher) describe the shallower stack.

    Left at the teacher's depth, save_pretrained would write a config that rebuilds the deep
    model with the dropped layers randomly initialised, and models that index per-layer settings
    (config.layer_types) by layer number would read the wrong entries.
    """
    for module in student.modules():
        config = getattr(module, "config", None)
        if getattr(config, "num_hidden_layers", None) != depth:
            continue  # not a transformers config, not this stack, or already synced (shared object)
        config.num_hidden_layers = len(kept)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == depth:
            config.layer_types = [layer_types[i] for i in kept]
