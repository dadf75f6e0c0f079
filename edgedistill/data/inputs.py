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


def to_device(x: Inputs, device: torch.device | str) -> Inputs:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def run(model: nn.Module, x: Inputs) -> Any:
    """The model's outputs: model(**x) for named inputs, model(x) for one tensor."""
    return model(**x) if isinstance(x, dict) else model(x)


def to_numpy(x: Inputs) -> np.ndarray | dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy()


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
