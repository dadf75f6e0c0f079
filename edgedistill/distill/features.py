"""Feature (hint) distillation plumbing: forward hooks on named modules, and shape adapters.

`FeatureTaps` captures the outputs of modules named as in `model.named_modules()` on every
forward; `build_adapters` runs one example forward of student and teacher to learn the feature
shapes and returns, per (student path, teacher path) pair, a small trainable module that maps the
student's feature onto the teacher's (1×1 conv or linear when widths differ, average pooling when
spatial sizes differ). The losses live in losses.py; wiring into the training loop is the
trainer's job.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.data.inputs import Inputs, run
from edgedistill.errors import UsageError
from edgedistill.specs import set_mode

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FeatureAdapter", "FeatureAdapters", "FeatureTaps", "PairSpec", "adapter_key", "build_adapters"]

MAX_LISTED_PATHS = 8  # closest matches shown in the error; the count says how many exist


def _valid_paths(model: nn.Module) -> list[str]:
    # The root ("") is the model itself: its output is what the logit/embedding loss already uses.
    return [name for name, _ in model.named_modules() if name]


def missing_path_error(path: str, model: nn.Module, role: str) -> UsageError:
    """'no module 'body.7' in the student; valid paths: body.6, body.5, … (41 in all)'."""
    valid = _valid_paths(model)
    if not valid:
        return UsageError(
            f"no module {path!r} in the {role}: it has no named submodules "
            f"(found {type(model).__name__})",
            "feature distillation needs a PyTorch module; a black-box teacher (ONNX) gives outputs only",
        )
    # cutoff=0: always rank every path, so the nearest names lead even for a bad typo.
    closest = difflib.get_close_matches(path, valid, n=MAX_LISTED_PATHS, cutoff=0.0)
    listed = ", ".join(closest) + (", …" if len(valid) > len(closest) else "")
    return UsageError(
        f"no module {path!r} in the {role}; valid paths: {listed} ({len(valid)} in all)",
        "use a dotted name as printed by model.named_modules()",
    )


def _first_tensor(output: Any, path: str, role: str) -> torch.Tensor:
    """A module's output as one tensor: transformer blocks return tuples led by hidden states."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise UsageError(
        f"{role} module {path!r} returned {type(output).__name__}, expected a tensor "
        "(or a tuple starting with one)",
        "pick a module whose output is a feature tensor",
    )


class FeatureTaps:
    """Forward hooks that keep the latest output of each named module in `outputs[path]`.

    A module called several times in one forward (a shared block) keeps its last call's output.
    Use as a context manager, or call remove(); hooks left behind would keep capturing (and
    holding tensors) after training ends.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], *, role: str = "model"):
        self.paths = list(dict.fromkeys(paths))  # ordered, without repeats: one hook per module
        modules = dict(model.named_modules())
        for path in self.paths:
            if not path or path not in modules:
                raise missing_path_error(path, model, role)
        self.role = role
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.outputs[path] = _first_tensor(output, path, self.role)

        return hook

    def clear(self) -> None:
        """Drop captured tensors (and the autograd graph they hold) once the loss has used them."""
        self.outputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@dataclass(frozen=True)
class PairSpec:
    student: str
    teacher: str
    weight: float = 1.0


def _as_pair(pair: Any) -> PairSpec:
    """A config FeaturePair (student/teacher/weight), a PairSpec, or a (student, teacher[, w]) tuple."""
    if isinstance(pair, (tuple, list)):
        return PairSpec(*pair)
    return PairSpec(pair.student, pair.teacher, float(getattr(pair, "weight", 1.0)))


def adapter_key(student_path: str, teacher_path: str) -> str:
    # ModuleDict keys may not contain "."; ":" never appears in named_modules() paths.
    return f"{student_path.replace('.', ':')}__{teacher_path.replace('.', ':')}"


class FeatureAdapter(nn.Module):
    """Maps a student feature onto its teacher feature's shape: forward(s, t) -> (s', t').

    `project` is trainable (Conv2d 1×1 on channels of N×C×H×W maps, Linear on the last dim of
    N×D or N×L×D features) or Identity when widths match. Spatial sizes that differ are matched
    by adaptive average pooling of the larger map to the smaller one, on whichever side is larger;
    pooling happens at run time, so it also follows inputs of another resolution.
    """

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, project: nn.Module):
        super().__init__()
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        self.project = project
        self.pools = len(student_shape) == 4 and student_shape[2:] != teacher_shape[2:]

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if s.dim() == 4 and s.shape[2:] != t.shape[2:]:
            size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
            s = F.adaptive_avg_pool2d(s, size) if s.shape[2:] != size else s
            t = F.adaptive_avg_pool2d(t, size) if t.shape[2:] != size else t
        return self.project(s), t

    def extra_repr(self) -> str:
        return f"student={list(self.student_shape)}, teacher={list(self.teacher_shape)}, pools={self.pools}"


class FeatureAdapters(nn.ModuleDict):
    """Adapters keyed by adapter_key(); `pairs[key]` says which paths and weight each serves.

    An nn.ModuleDict so its parameters join the optimizer and its state_dict the checkpoint.
    """

    def __init__(self, adapters: Mapping[str, FeatureAdapter], pairs: Mapping[str, PairSpec]):
        super().__init__(adapters)
        self.pairs = dict(pairs)


def _make_adapter(pair: PairSpec, s: torch.Tensor, t: torch.Tensor) -> FeatureAdapter:
    shapes = f"student {pair.student!r} {list(s.shape)} vs teacher {pair.teacher!r} {list(t.shape)}"
    if s.dim() != t.dim():
        raise UsageError(
            f"feature pair ranks differ: {shapes}",
            "pair modules whose outputs have the same layout (N×C×H×W with N×C×H×W, N×D with N×D)",
        )
    if s.dim() < 2:
        raise UsageError(f"feature pair needs batched features (N×…): {shapes}")
    if s.dim() == 3 and s.shape[1] != t.shape[1]:
        # Token features: averaging neighbouring tokens has no meaning the way pooling a map does.
        raise UsageError(f"feature pair sequence lengths differ: {shapes}", "pair layers with equal lengths")
    if s.dim() > 4 and s.shape[2:] != t.shape[2:]:
        raise UsageError(f"feature pair shapes differ beyond the channels: {shapes}")
    axis = -1 if s.dim() == 3 else 1  # N×L×D tokens carry their width last; maps and vectors at 1
    c_s, c_t = s.shape[axis], t.shape[axis]
    if c_s == c_t:
        project: nn.Module = nn.Identity()
    elif s.dim() == 4:
        project = nn.Conv2d(c_s, c_t, kernel_size=1)
    elif s.dim() in (2, 3):
        project = nn.Linear(c_s, c_t)
    else:
        raise UsageError(f"feature pair widths differ and no adapter exists for rank {s.dim()}: {shapes}")
    return FeatureAdapter(s.shape, t.shape, project).to(device=s.device, dtype=s.dtype)


def _tapped_forward(model: nn.Module, paths: list[str], x: Inputs, role: str) -> dict[str, torch.Tensor]:
    """One no-grad eval-mode forward, returning the tapped outputs; modes are restored after."""
    modes = [(m, m.training) for m in model.modules()]
    with FeatureTaps(model, paths, role=role) as taps:
        set_mode(model, training=False)  # BatchNorm accepts a batch of one; running stats stay
        try:
            with torch.no_grad():
                run(model, x)
        finally:
            for m, training in modes:
                m.training = training
        outputs = dict(taps.outputs)
    for path in paths:
        if path not in outputs:
            raise UsageError(f"{role} module {path!r} was not called in a forward pass",
                             "pick a module the forward actually runs")
    return outputs


def build_adapters(
    student: nn.Module, teacher: nn.Module, pairs: Sequence[Any], example_input: Inputs
) -> FeatureAdapters:
    """An adapter per (student path, teacher path) pair, sized from one forward of each model.

    Bad paths, rank mismatches and unused modules raise UsageError here, before any training step.
    """
    specs = [_as_pair(p) for p in pairs]
    keys = [adapter_key(p.student, p.teacher) for p in specs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UsageError(f"feature pair listed twice: {dup.replace('__', ' -> ').replace(':', '.')}")
    s_out = _tapped_forward(student, [p.student for p in specs], example_input, "student")
    t_out = _tapped_forward(teacher, [p.teacher for p in specs], example_input, "teacher")
    adapters = {k: _make_adapter(p, s_out[p.student], t_out[p.teacher]) for k, p in zip(keys, specs, strict=True)}
    return FeatureAdapters(adapters, dict(zip(keys, specs, strict=True)))
