"""Teacher logits for the training set, computed once and kept on disk.

The teacher is the expensive model and it does not change during distillation, so its outputs
on the (unaugmented) training set are computed once, batched and without gradients, and reused
by every later run whose teacher and data are the same. The key is a digest of the teacher
(spec, architecture, every tensor of its state) and the data fingerprint; the file is
safetensors, so reading a cache never runs code, and it is written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from edgedistill.artifacts import atomic_write_bytes
from edgedistill.data import DataSplits
from edgedistill.data.inputs import Inputs, count, run, split
from edgedistill.specs import set_mode

# Metadata goes in one key: safetensors orders several keys at random, so bytes would differ.
_META = "edgedistill"


def teacher_logits(
    teacher: nn.Module, splits: DataSplits, cache_dir: Path, *, spec: str = "", batch_size: int = 256
) -> torch.Tensor:
    """The teacher's logits for splits.x_train, from the cache when teacher and data match."""
    digest = model_digest(teacher, spec)
    path = Path(cache_dir) / f"teacher-logits-{digest[:16]}-{splits.fingerprint[:16]}.safetensors"
    cached = _read(path, digest, splits)
    if cached is not None:
        return cached
    logits = predict(teacher, splits.x_train, batch_size)
    meta = {"teacher": digest, "data": splits.fingerprint}
    atomic_write_bytes(path, save({"logits": logits.contiguous()}, metadata={_META: json.dumps(meta)}))
    return logits


def model_digest(model: nn.Module, spec: str = "") -> str:
    """sha256 over the spec, the module tree and every tensor in the state (weights and buffers)."""
    h = hashlib.sha256(f"{spec}\n{type(model).__module__}.{type(model).__qualname__}\n{model}".encode())
    # A black-box teacher (OnnxTeacher) has no state: its weights are a file it has hashed.
    content = getattr(model, "content_digest", None)
    if content is not None:
        h.update(f"content:{content}\n".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: works for any dtype
    return h.hexdigest()


def predict(model: nn.Module, x: Inputs, batch_size: int = 256) -> torch.Tensor:
    """Logits for every row of x, in eval mode and without gradients; the model's mode is restored."""
    was_training = model.training
    set_mode(model, training=False)
    try:
        with torch.no_grad():
            return torch.cat([run(model, batch) for batch in split(x, batch_size)])
    finally:
        set_mode(model, training=was_training)


def _read(path: Path, digest: str, splits: DataSplits) -> torch.Tensor | None:
    """The cached logits, or None when absent, damaged or made for another teacher or data."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META, "{}"))
            logits = f.get_tensor("logits")
    except (SafetensorError, OSError, ValueError):
        return None  # recomputed and rewritten by the caller
    if meta != {"teacher": digest, "data": splits.fingerprint}:
        return None
    # (N, classes) logits or (N, D) / (N, L, D) embeddings: the cache holds whatever the teacher returns.
    return logits if logits.dim() >= 2 and len(logits) == count(splits.x_train) else None
