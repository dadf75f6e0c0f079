"""`edgedistill distill --nproc-per-node N`: start the data-parallel workers, as torchrun would.

Uses torch's own elastic launcher (what torchrun runs), so the rendezvous options mean what
they mean to torchrun, and the same run can also be started by torchrun itself
(`torchrun ... -m edgedistill distill ...`): a process that finds WORLD_SIZE in its environment
joins that world. Each worker (`python -m edgedistill.launch CONFIG RESULTS`) runs the distill
stage and leaves its result in RESULTS/rank-N.json; rank 0 writes the run, and its result (or
its error, which keeps its exit code) is what the launching process reports.

Workers are separate programs, as under torchrun, so both ways of starting a run behave alike.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.artifacts import atomic_write_text
from edgedistill.config import Config
from edgedistill.errors import EXIT_INTERNAL, EdgeDistillError, UsageError

if TYPE_CHECKING:  # torch is imported only when workers are launched
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

DEFAULT_PORT = 29500  # torchrun's


@dataclass(frozen=True)
class LaunchOptions:
    nproc_per_node: int = 1
    nnodes: str = "1"  # N, or MIN:MAX for an elastic job
    node_rank: int = 0  # static rendezvous only: c10d assigns ranks itself
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str | None = None  # host[:port] of the rendezvous; node 0's address
    rdzv_id: str = "edgedistill"  # the same on every node of one job
    max_restarts: int = 0  # restarted workers resume from the last checkpoint

    @property
    def node_range(self) -> tuple[int, int]:
        low, _, high = self.nnodes.partition(":")
        try:
            nodes = int(low), int(high or low)
        except ValueError:
            nodes = (0, 0)
        if not 0 < nodes[0] <= nodes[1]:
            raise UsageError(f"--nnodes must be N or MIN:MAX with 0 < MIN <= MAX, found {self.nnodes!r}")
        return nodes

    @property
    def parallel(self) -> bool:
        return self.nproc_per_node > 1 or self.node_range[1] > 1


class _RankError(EdgeDistillError):
    """An error a worker raised, with the exit code it carried there."""

    def __init__(self, message: str, hint: str | None, exit_code: int):
        super().__init__(message, hint)
        self.exit_code = exit_code


def launch_distill(cfg: Config, options: LaunchOptions, *, quiet: bool, debug: bool,
                   trusted: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """Run the distill stage on every worker; rank 0's metrics, or None on nodes without rank 0."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from edgedistill import interrupts

    min_nodes, max_nodes = options.node_range
    if max_nodes > 1 and not options.rdzv_endpoint:
        raise UsageError(f"--nnodes {options.nnodes} needs --rdzv-endpoint HOST[:PORT], found none",
                         "give every node the address of node 0, e.g. --rdzv-endpoint 10.0.0.1:29500")
    single_node = max_nodes == 1 and not options.rdzv_endpoint
    if single_node:  # torchrun --standalone: a private rendezvous on a free port
        backend, endpoint, run_id = "c10d", "localhost:0", str(uuid.uuid4())
    else:
        backend, run_id = options.rdzv_backend, options.rdzv_id
        endpoint = options.rdzv_endpoint if ":" in options.rdzv_endpoint else f"{options.rdzv_endpoint}:{DEFAULT_PORT}"
    config = LaunchConfig(
        min_nodes=min_nodes, max_nodes=max_nodes, nproc_per_node=options.nproc_per_node,
        run_id=run_id, rdzv_backend=backend, rdzv_endpoint=endpoint,
        rdzv_configs={"rank": options.node_rank} if backend == "static" else {},
        max_restarts=options.max_restarts, monitor_interval=0.5,
    )
    if not debug:  # the agent logs each rendezvous round and worker group at WARNING
        # torch sets a level on each of its elastic loggers, so the parent's level alone is not
        # enough (the agent's "Received 15 death signal" line came through).
        for name in [n for n in list(logging.root.manager.loggerDict) if n.startswith("torch.distributed.elastic")]:
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="edgedistill-workers-") as tmp:
        results = Path(tmp)
        (results / "config.json").write_text(cfg.model_dump_json())
        (results / "trusted.json").write_text(json.dumps(sorted(trusted)))  # --trust-sha256, for every rank
        flags = [flag for flag, on in (("--quiet", quiet), ("--debug", debug)) if on]
        try:
            elastic_launch(config, sys.executable)("-m", "edgedistill.launch", str(results / "config.json"),
                                                   str(results), *flags)
        except ChildFailedError as e:
            _report_failure(e, options.max_restarts)
        except SignalException as e:
            # While workers run, the launcher's own handlers replace ours: it ends every worker's
            # process group (the signal, then SIGKILL after its shutdown timeout) and re-raises.
            # From here the command unwinds like any other interrupt (the temporary folder goes).
            raise interrupts.interrupted(e.sigval) from None
        finally:
            interrupts.reinstall()  # the launcher does not put back the handlers it replaced
        rank0 = results / "rank-0.json"
        if not rank0.is_file():  # a node without rank 0
            return None
        return _outcome(json.loads(rank0.read_text()))


def _report_failure(e: ChildFailedError, restarts: int) -> None:
    """A worker that crashed or was killed, after any --max-restarts were used up (expected
    errors come back as results). An exception's message is in the worker's output above."""
    # The root cause first: a worker killed by a signal other than the SIGTERM with which the
    # launcher stops the survivors, then the earliest failure. Its peers fail too (their
    # collectives lose a partner) and say so in their own output.
    def cause(item: tuple[int, Any]) -> tuple:
        rank, failure = item
        return (failure.exitcode >= 0 or failure.exitcode == -signal.SIGTERM, failure.timestamp, rank)

    rank, failure = min(e.failures.items(), key=cause)
    how = (f"was killed by {_signal_name(-failure.exitcode)}" if failure.exitcode < 0
           else f"failed with exit code {failure.exitcode} (its output above says why)")
    raise EdgeDistillError(
        f"distillation worker rank {rank} {how}; restarts used: {restarts}",
        "run the same command again: it resumes from the last checkpoint "
        "(distill.checkpoint_every_steps makes those more frequent; --max-restarts retries on its own)",
    ) from e


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    """A worker's metrics, or its error raised again here with its exit code."""
    if "error" in result:
        raise _RankError(**result["error"])
    return result["metrics"]


def _worker(cfg: Config, quiet: bool, debug: bool, trusted: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One rank's whole run; an expected error is returned (not raised) so it keeps its exit code."""
    from edgedistill import api
    from edgedistill.distill.world import world_from_env
    from edgedistill.ui import UI

    world = world_from_env()
    if cfg.distill.threads is None:  # the node's cores are shared by its ranks
        threads = max(1, (os.cpu_count() or 1) // world.local_size)
        cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"threads": threads})})
    try:
        ws = api.open_workspace(cfg, trust_sha256=trusted)
        distilled = api.distill(ws, UI(quiet=quiet or not world.main, debug=debug), world)
        # Ranks leave together: one that finished first and tore down its connections while
        # rank 0 still wrote the weights sometimes died in gloo at exit (SIGABRT, "terminate
        # called without an active exception"), about 1 run in 10 under torchrun here.
        world.barrier()
    except EdgeDistillError as e:
        if debug:
            raise
        return {"rank": world.rank, "error": {"message": e.message, "hint": e.hint, "exit_code": e.exit_code}}
    finally:
        world.close()
    return {"rank": world.rank, "metrics": distilled.metrics}


def run_in_world(cfg: Config, *, quiet: bool, debug: bool,
                 trusted: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """This process was started by torchrun: be one rank. Rank 0's metrics, None elsewhere."""
    result = _worker(cfg, quiet, debug, trusted)
    return _outcome(result) if result["rank"] == 0 or "error" in result else None


def _worker_main(argv: list[str]) -> int:
    """`python -m edgedistill.launch CONFIG RESULTS [--quiet] [--debug]`, as launch_distill runs it."""
    config, results, flags = Path(argv[0]), Path(argv[1]), set(argv[2:])
    debug = "--debug" in flags
    # The launcher stops workers with the signal it received (SIGINT included): end quietly, as
    # SIGTERM does, not with a KeyboardInterrupt traceback from every rank.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        trusted = frozenset(json.loads((results / "trusted.json").read_text()))
        result = _worker(Config.model_validate_json(config.read_text()), "--quiet" in flags, debug, trusted)
    except Exception as e:  # a bug, or a peer that died mid-collective: one line, the launcher reports
        if debug:
            raise
        print(f"internal error in rank {os.environ.get('RANK', '?')}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    atomic_write_text(results / f"rank-{result['rank']}.json", json.dumps(result))
    return 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
