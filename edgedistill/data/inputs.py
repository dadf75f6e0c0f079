"""A model's inputs, one tensor or several named ones, handled alike by training and export.

A one-input model (an image CNN) takes a tensor; a text model takes `input_ids`,
`attention_mask` and often `token_type_ids`, each N×L int64. Inputs are therefore a tensor or a
dict name -> tensor whose first axis is the sample; a dict is passed to the model as keyword
arguments, so the names are the model's own forward parameters (and the exported graph's inputs).
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
from torch import nn

Inputs = Union[torch.Tensor, dict[str, torch.Tensor]]
SINGLE_NAME = "x"  # the array name of the one-input case in an .npz (and in describe())


def count(x: Inputs) -> int:
    """Samples along the first axis."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, index: Any) -> Inputs:
    """Rows `index` (an index tensor, array or slice) of every input."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def split(x: Inputs, size: int) -> list[Inputs]:
    """Consecutive batches of at most `size` samples."""
    return [take(x, slice(i, i + size)) for i in range(0, count(x), size)]


def run(model: nn.Module, x: Inputs) -> Any:
    """The model's outputs: model(**x) for named inputs, model(x) for one tensor."""
    return model(**x) if isinstance(x, dict) else model(x)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """An array as a model sees it: floats as float32, integers (token ids, masks) as int64,
    booleans kept: a cast of ids to float would break an embedding layer."""
    kind = array.dtype.kind
    dtype = np.int64 if kind in "iu" else np.bool_ if kind == "b" else np.float32
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


def example(x: Inputs) -> Inputs:
    """The first sample as a batch of one, for tracing and export."""
    one = take(x, slice(0, 1))
    return {k: v.contiguous() for k, v in one.items()} if isinstance(one, dict) else one.contiguous()


def describe(x: Inputs) -> str:
    """`input_ids int64 (N, 32), attention_mask int64 (N, 32)` or `float32 (N, 1, 32, 32)`."""
    def one(t: torch.Tensor) -> str:
        return f"{str(t.dtype).removeprefix('torch.')} (N, {', '.join(map(str, t.shape[1:]))})".replace(", )", ")")
    return ", ".join(f"{k} {one(v)}" for k, v in x.items()) if isinstance(x, dict) else one(x)


def check_names(model: nn.Module, role: str, x: Inputs) -> None:
    """Refuse, before any training, data whose input names the model's forward does not take,
    or that lacks one it requires: the model would fail at its first step, or an input would
    silently be ignored. A model with **kwargs takes any name; one input needs no names."""
    import inspect

    from edgedistill.errors import ModelMismatchError

    if not isinstance(x, dict):
        return
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or compiled forward: run() will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes = [p.name for p in named]
    required = [p.name for p in named if p.default is p.empty]
    unknown, missing = [n for n in x if n not in takes], [n for n in required if n not in x]
    if unknown or missing:
        found = "; ".join(part for part in (f"the data has {unknown}, which it does not take" if unknown else "",
                                            f"the data lacks {missing}" if missing else "") if part)
        raise ModelMismatchError(f"the {role}'s forward takes inputs {takes} (required {required}); {found}",
                                 "name the data's arrays after the model's forward parameters (x for a model with one input)")


def in_forward_order(model: nn.Module, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Named inputs in the order of the model's forward parameters: the order an export gives
    its inputs (and a .pte's input_0, input_1, ...), so every file is written in it."""
    import inspect

    try:
        order = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return dict(x)
    return dict(sorted(x.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


class Positional(nn.Module):
    """A model with named inputs as one with positional ones, in a fixed order: exporters trace
    positional arguments, and an input the data lacks stays at its default instead of another
    input taking its place."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *args: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)))
