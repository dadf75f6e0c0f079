"""Input augmentation for distillation: each batch is changed before student AND teacher see it.

With augmentation the teacher labels inputs it has never labelled before, which is the point
(the student matches the teacher's function around the data, not just at it), and also why the
teacher-output cache cannot be used: the trainer runs the teacher live on every augmented batch.

Spec strings (config `distill.augment`, applied in order):
    shift:<pixels>   random translation of images (N, C, H, W) by up to that many pixels,
                     zero-filled, per sample
    noise:<std>      Gaussian noise with that standard deviation
    pkg.mod:factory  your own: factory() returns a callable batch -> batch of the same shape

Randomness comes from torch's global generator, which the trainer seeds per rank and saves in
its checkpoints, so an augmented run resumes exactly like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from edgedistill.errors import UsageError
from edgedistill.specs import call_entrypoint, is_entrypoint

Augment = Callable[[torch.Tensor], torch.Tensor]
AUGMENT_FORMS = "shift:<pixels>, noise:<std> or pkg.mod:factory"


def build_augment(specs: Sequence[str]) -> Augment | None:
    """One callable applying every spec in order; None when there are none."""
    steps = [_one(spec) for spec in specs]
    if not steps:
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, dict):  # token ids and masks: shifting or adding noise means nothing
            raise UsageError(f"augmentation ({AUGMENT_FORMS}) takes models with one input, found named "
                             f"inputs {', '.join(x)}", "remove [distill] augment for this model")
        for step in steps:
            out = step(x)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise UsageError(f"augmentation must keep the batch shape {tuple(x.shape)}, found {found}")
            x = out
        return x

    return augment


def random_shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-pixels, pixels]; zeros come in."""
    if x.dim() != 4:
        raise UsageError(f"augment shift:{pixels} needs images (batch, channels, height, width), "
                         f"found a batch of shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2))
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def _one(spec: str) -> Augment:
    name, _, arg = spec.partition(":")
    if name == "shift" and arg.isdigit() and int(arg) > 0:
        pixels = int(arg)
        return lambda x: random_shift(x, pixels)
    if name == "noise" and _positive_float(arg):
        std = float(arg)
        return lambda x: x + std * torch.randn_like(x)
    if is_entrypoint(spec) and name not in ("shift", "noise"):
        transform = call_entrypoint(spec, "augment")
        if not callable(transform):
            raise UsageError(f"augment spec {spec!r} must return a callable batch -> batch, "
                             f"found {type(transform).__name__}")
        return transform
    raise UsageError(f"augment spec {spec!r} is not understood; expected {AUGMENT_FORMS}",
                     "shift takes a whole number of pixels > 0, noise a standard deviation > 0")


def _positive_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False
