"""The processes of a data-parallel run, as the trainer sees them: who am I, and the few
collectives it needs. A single process is a world of one whose collectives cost nothing, so
the training code has one path for both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_size: int = 1  # processes on this node: they share its cores

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and talks to the user."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills a cache); the others then find it done."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Key-wise sums over the ranks (every rank must pass the same keys)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(total)
        return dict(zip(keys, total.tolist(), strict=True))

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean gradient over the ranks, for parameters DistributedDataParallel does not own."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.distributed or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def close(self) -> None:
        """Leave the process group (at the end of a worker's run)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun (or `edgedistill distill --nproc-per-node`) started this process in.

    Joins the process group (gloo: training runs on the CPU) when WORLD_SIZE > 1; a process
    started any other way is a world of one.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("gloo", **_restart_safe_store(size))
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))


def _restart_safe_store(size: int) -> dict:
    """init_process_group arguments that keep a restarted worker group off the old one's keys.

    Under the elastic agent (torchrun, --nproc-per-node) the workers meet in the agent's store,
    which outlives a restart (--max-restarts); the default init reads the addresses the killed
    workers left there and fails to connect, or hangs (seen with torch 2.13). One key prefix per
    attempt keeps each group to its own addresses.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or restart is None:
        return {}  # env:// init: a fresh store per launch
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False)
    return {
        "store": dist.PrefixStore(f"edgedistill/attempt-{restart}", store),
        "rank": int(os.environ["RANK"]),
        "world_size": size,
    }
