"""[distill] lr and batch_size chosen by what the student is, when the config leaves them out.

The values of a student trained from scratch (lr 3e-3, batch 64, AdamW with the trainer's warm-up
and cosine schedule) were chosen for the built-in digits CNN. A student that starts from a
pretrained transformer's weights (`shallow:k` / `prune:w` of an `hf:` teacher, an `hf:` student,
or any student holding a transformers model loaded with from_pretrained) is fine-tuned: a lower
rate keeps more of what it was pretrained with, and a smaller batch takes more steps on the few
thousand sentences such runs usually have. Measured by benchmarks/text_defaults.py on the real
all-MiniLM-L6-v2 (2-layer student, 700 training sentences, 3 epochs, batch 32; held-out cosine
to the teacher): lr 3e-3 0.682, 1e-3 0.677, 1e-4 0.530 (too slow to move in 66 steps), a plain
AdamW loop at 5e-5 0.534. 1e-3 keeps 3e-3's progress on short runs and is 3x gentler on the
pretrained weights on long ones, where issue 12 saw 3e-3 fall behind a low-rate loop.
A value the user gives always wins.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from torch import nn

from edgedistill.config import DistillConfig


@dataclass(frozen=True)
class Defaults:
    lr: float
    batch_size: int
    why: str


SCRATCH = Defaults(3e-3, 64, "a student trained from its own initial weights")
PRETRAINED_TRANSFORMER = Defaults(
    1e-3, 32, "fine-tuning a pretrained transformer ({source}): a lower lr than from scratch (3e-3) keeps its "
              "weights, a smaller batch takes more steps on small data (benchmarks/text_defaults.py)")
SETTINGS = ("lr", "batch_size")


def pretrained_transformer(student: nn.Module) -> str | None:
    """Where the student's pretrained transformer weights came from, or None.

    transformers sets config.name_or_path to the folder (or hub name) from_pretrained read; a
    model built from a bare config leaves it empty, so a randomly initialised BERT counts as
    trained from scratch. A derived student is a copy of the teacher, config included.
    """
    transformers = sys.modules.get("transformers")  # never imported here: no HF model without it
    if transformers is None:
        return None
    for module in student.modules():
        if isinstance(module, transformers.PreTrainedModel):
            source = getattr(module.config, "name_or_path", "") or ""
            if source:
                return f"{type(module).__name__} from {source}"
    return None


def choose(student: nn.Module) -> Defaults:
    source = pretrained_transformer(student)
    if source is None:
        return SCRATCH
    return Defaults(PRETRAINED_TRANSFORMER.lr, PRETRAINED_TRANSFORMER.batch_size,
                    PRETRAINED_TRANSFORMER.why.format(source=source))


def resolve(cfg: DistillConfig, student: nn.Module) -> tuple[DistillConfig, str | None]:
    """cfg with lr and batch_size filled in, and the one log line that says which and why.

    The note is None when the user set both (nothing was chosen).
    """
    unset = [name for name in SETTINGS if getattr(cfg, name) is None]
    if not unset:
        return cfg, None
    chosen = choose(student)
    resolved = cfg.model_copy(update={name: getattr(chosen, name) for name in unset})
    parts = [f"{name} {getattr(resolved, name):g}" + ("" if name in unset else " (yours)") for name in SETTINGS]
    return resolved, (f"distill defaults: {', '.join(parts)}: {chosen.why}; "
                      f"set [distill] {' / '.join(unset)} to choose")
