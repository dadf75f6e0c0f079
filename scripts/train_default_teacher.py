"""Train the built-in digits teacher and write edgedistill/weights/digits_teacher.safetensors.

Trains on the training split only, as load_data() defines it with the default DataConfig and
seed 0, so the validation and test splits every later stage reports on stay unseen. The test
accuracy is printed and stored in the file's metadata.

    python scripts/train_default_teacher.py [--epochs 8] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save

from edgedistill.artifacts import atomic_write_bytes
from edgedistill.config import DataConfig
from edgedistill.data import load_data
from edgedistill.distill.trainer import evaluate
from edgedistill.zoo import DIGITS_TEACHER_WEIGHTS, digits_teacher

SEED = 0
MAX_SHIFT = 2  # pixels; digits drawn off-centre are the commonest test error


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate every image by up to MAX_SHIFT pixels (zero fill), independently per sample."""
    padded = F.pad(x, [MAX_SHIFT] * 4)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (len(x), 2), generator=gen).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def train(epochs: int, batch_size: int, lr: float) -> tuple[torch.nn.Module, dict[str, object]]:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    splits = load_data(DataConfig(), SEED)
    model = digits_teacher(pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(splits.x_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        start, model = time.perf_counter(), model.train()
        for idx in torch.randperm(len(splits.x_train), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(random_shift(splits.x_train[idx], gen)), splits.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val, seconds = evaluate(model, splits.x_val, splits.y_val), time.perf_counter() - start
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} val {val:.4f} ({seconds:.1f} s)")
    test = evaluate(model, splits.x_test, splits.y_test)
    print(f"test accuracy {test:.4f} on {len(splits.x_test)} held-out samples")
    meta = {
        "test_accuracy": round(test, 4),
        "data_fingerprint": splits.fingerprint,
        "seed": SEED,
        "epochs": epochs,
        "torch": torch.__version__,
    }
    return model.eval(), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=DIGITS_TEACHER_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model, meta = train(args.epochs, args.batch_size, args.lr)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes several in random order, so equal weights would
    # not give equal bytes (nor an equal sha256).
    atomic_write_bytes(args.out, save(state, metadata={"edgedistill": json.dumps(meta, sort_keys=True)}))
    args.out.chmod(0o644)  # shipped as package data; the atomic writer's temporary file is 0600
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
