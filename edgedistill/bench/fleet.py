"""Several targets in one run: one job per device, devices measured concurrently.

Targets that name the same device (this machine; one SSH host; one adb serial) are measured one
after another, so no two jobs ever share a device's cores; different devices run at once, each in
its own thread, each target through its own runner (runners.open_runner), opened for the whole
target and closed after it (a remote device's lock is held meanwhile, so another CI job queues).
A device that cannot be reached makes its target inconclusive and nothing else.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from edgedistill.bench.runners import Runner, open_runner
from edgedistill.config import TargetConfig
from edgedistill.errors import InconclusiveError
from edgedistill.ui import UI



@dataclass
class Job:
    """One target's measurement, as measure_all hands it to its caller."""

    target: TargetConfig
    runner: Runner | None  # None: the device could not be reached
    unreachable: str | None  # why, then
    concurrent: bool  # other devices are being measured at the same time (no progress bars)
    stop: threading.Event  # set when the command is ending: measure nothing more

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()


def device_key(target: TargetConfig) -> str:
    """Which device a target measures on: targets with the same key never run at the same time."""
    if target.runner == "ssh":
        ssh = target.ssh
        return f"ssh:{ssh.host}:{ssh.port or ''}:{ssh.config or ''}"
    if target.runner == "adb":
        return f"adb:{target.adb.serial or '(the only device)'}"
    return "local"


@contextlib.contextmanager
def opened(target: TargetConfig, ui: UI) -> Iterator[tuple[Runner | None, str | None]]:
    """(the target's runner, None), open for the whole target and closed on the way out, or
    (None, why) when the device cannot be reached or stays busy. An SSH host key that is unknown
    or changed is not caught here: it stops the whole command (exit 6)."""
    try:
        runner = open_runner(target, ui.step)
    except InconclusiveError as e:
        reason = f"{e.message} ({e.hint})" if e.hint else e.message
        ui.step(f"bench {target.name}: {reason}")
        yield None, reason
        return
    try:
        yield runner, None
    finally:
        runner.close()


def measure_all(targets: list[TargetConfig], measure: Callable[[Job], None], ui: UI) -> None:
    """Call measure() for every target with its runner: devices concurrently, each device's
    targets in order. With one device, all in this thread (progress bars, signals as before)."""
    groups: dict[str, list[TargetConfig]] = {}
    for target in targets:
        groups.setdefault(device_key(target), []).append(target)
    concurrent = len(groups) > 1
    stop = threading.Event()  # set when this thread is interrupted: workers start nothing new

    def run(group: list[TargetConfig]) -> None:
        for target in group:
            if stop.is_set():
                return
            with opened(target, ui) as (runner, unreachable):
                measure(Job(target, runner, unreachable, concurrent, stop))

    if not concurrent:
        for group in groups.values():
            run(group)
        return
    ui.step(f"measuring {len(groups)} devices at once: " + ", ".join(groups))
    pool = ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="edgedistill-device")
    futures = [pool.submit(run, group) for group in groups.values()]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            f.result()  # the first error (a refused host key, a bug) ends the command
    except BaseException:
        # An interrupt or one device's error: the other devices' probes are ended (their outcome
        # is then a failure, which they record) until every worker has returned; they start
        # nothing new once `stop` is set.
        from edgedistill.bench.runners.local import kill_live_groups

        stop.set()
        while wait(futures, timeout=0.2).not_done:
            kill_live_groups()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
