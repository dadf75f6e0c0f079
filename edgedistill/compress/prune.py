"""Structured channel pruning of the distilled student with torch-pruning.

torch-pruning builds the model's dependency graph, so a channel removed from one layer is removed
from every layer coupled to it (the next layer's inputs, a BatchNorm, both sides of a residual
add, a grouped convolution's groups). What was removed is recorded as a plan of (layer, pruning
function, channel indices): JSON, replayed on a fresh copy of the student to rebuild the pruned
architecture before its weights are loaded, so a cached stage never unpickles anything.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgedistill.backends.common import first_line
from edgedistill.data.inputs import Inputs, run
from edgedistill.errors import UsageError

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def form_name(ratio: float | None, layers: dict[str, float]) -> str:
    """The student form's label in artifact names: "prune0.5", or "prune-layers" + a digest
    of the per-layer ratios when only layers are named."""
    if ratio is not None and not layers:
        return f"prune{ratio:g}"
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([ratio, layers], sort_keys=True).encode()).hexdigest()[:6]
    return f"prune{'' if ratio is None else f'{ratio:g}'}-layers{digest}"


def _classifier(model: nn.Module) -> nn.Module | None:
    """The last Linear: its outputs are the classes (or the embedding), pruning them changes the task."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose output channels can be pruned, in module order."""
    last = _classifier(model)
    return [name for name, m in model.named_modules() if isinstance(m, PRUNABLE) and m is not last]


def check_layers(model: nn.Module, layers: dict[str, float]) -> None:
    """A layer name in [compress.prune] layers that the student does not have: one line listing
    the prunable ones (before any training, so a typo costs nothing)."""
    names = prunable_layers(model)
    for name in layers:
        if name not in names:
            shown = ", ".join(names[:40]) + (f", … ({len(names)} in all)" if len(names) > 40 else "")
            raise UsageError(f"[compress.prune] layers names {name!r}, which is not a prunable layer of the "
                             f"student ({type(model).__name__}); prunable: {shown or 'none'}",
                             "use the module names of model.named_modules() (Conv and Linear layers, "
                             "the classifier excepted)")


@dataclass
class Pruned:
    model: nn.Module
    plan: list[dict]  # [{"module", "fn", "idxs"}] in the order applied: replay() rebuilds the architecture
    params_before: int
    params_after: int
    macs_before: float
    macs_after: float


def _importance(name: str):
    import torch_pruning as tp

    # Group importances score a channel over every layer coupled to it, not one layer alone.
    return tp.importance.GroupTaylorImportance() if name == "taylor" else tp.importance.GroupMagnitudeImportance(p=2)


def prune(model: nn.Module, example: Inputs, *, ratio: float | None, layers: dict[str, float],
          importance: str = "magnitude", loss: Callable[[nn.Module], torch.Tensor] | None = None) -> Pruned:
    """A pruned copy of `model`: `ratio` of the output channels of every prunable layer (or the
    per-layer `layers` ratios, which take precedence), ranked by L2 magnitude or by Taylor score
    (|weight x gradient| of `loss`, which importance="taylor" needs)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    check_layers(pruned, layers)
    names = {m: n for n, m in pruned.named_modules()}
    by_name = dict(pruned.named_modules())
    classifier = _classifier(pruned)
    with torch.no_grad():
        before_out = run(pruned, example)
    macs_before, params_before = tp.utils.count_ops_and_params(pruned, example)
    plan: list[dict] = []
    try:  # not under no_grad: torch-pruning traces the dependency graph through autograd
        pruner = tp.pruner.MetaPruner(
            pruned, example, importance=_importance(importance), pruning_ratio=ratio or 0.0,
            pruning_ratio_dict={by_name[n]: r for n, r in layers.items()} or None,
            ignored_layers=[classifier] if classifier is not None else [], global_pruning=False,
        )
        if importance == "taylor":
            pruned.zero_grad()
            loss(pruned).backward()
        for group in pruner.step(interactive=True):
            dep, idxs = group[0]
            plan.append({"module": names[dep.target.module], "fn": dep.handler.__name__,
                         "idxs": [int(i) for i in idxs]})
            group.prune()
        pruned.zero_grad(set_to_none=True)
        with torch.no_grad():
            after_out = run(pruned, example)
    except UsageError:
        raise
    except Exception as e:  # torch-pruning fails in many ways on graphs it cannot trace
        raise UsageError(f"[compress.prune]: torch-pruning cannot prune the student {type(model).__name__} "
                         f"({type(e).__name__}: {first_line(str(e), 200)})",
                         "prune named layers only ([compress.prune] layers), or give a smaller student") from e
    if getattr(after_out, "shape", None) != getattr(before_out, "shape", None):
        raise UsageError(f"[compress.prune]: the pruned student outputs {tuple(after_out.shape)}, "
                         f"the student {tuple(before_out.shape)}")
    if not plan:
        raise UsageError(f"[compress.prune]: ratio {ratio} removes no channel of the student "
                         f"{type(model).__name__} (its layers are too narrow)", "raise the ratio")
    macs_after, params_after = tp.utils.count_ops_and_params(pruned, example)
    return Pruned(pruned, plan, int(params_before), int(params_after), float(macs_before), float(macs_after))


def replay(model: nn.Module, example: Inputs, plan: list[dict]) -> nn.Module:
    """Apply a recorded plan to a copy of `model`: the pruned architecture, ready for its weights."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    for step in plan:
        module = pruned.get_submodule(step["module"])
        fn = getattr(graph.get_pruner_of_module(module), step["fn"])
        graph.get_pruning_group(module, fn, step["idxs"]).prune()
    return pruned


def describe(p: Pruned | dict) -> str:
    d = p if isinstance(p, dict) else p.__dict__
    return (f"params {d['params_before'] / 1e6:.3f} M -> {d['params_after'] / 1e6:.3f} M "
            f"({d['params_after'] / d['params_before']:.1%}), MACs {d['macs_before'] / 1e6:.2f} M -> "
            f"{d['macs_after'] / 1e6:.2f} M ({d['macs_after'] / d['macs_before']:.1%})")


def taylor_loss(teacher: nn.Module, splits, dc, samples: int = 256) -> Callable[[nn.Module], torch.Tensor]:
    """The distillation loss on the first `samples` training samples: what a Taylor score
    differentiates, so a channel is ranked by how much the loss the student is trained on needs it."""
    from edgedistill.data.inputs import take
    from edgedistill.distill.losses import embedding_loss, hinton_loss

    x = take(splits.x_train, slice(0, samples))
    labels = None if splits.y_train is None else splits.y_train[:samples]
    with torch.no_grad():
        target = run(teacher.eval(), x)

    def loss(model: nn.Module) -> torch.Tensor:
        out = run(model, x)
        if dc.objective == "embedding":
            return embedding_loss(out, target, dc.embedding_mse_weight, dc.embedding_cosine_weight).total
        return hinton_loss(out, target, labels, dc.temperature, dc.alpha).total

    return loss
