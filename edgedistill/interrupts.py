"""SIGINT, SIGTERM and SIGHUP end a command cleanly: one exception that unwinds the stack.

The CLI installs `handle_signals()`; a signal then raises `Interrupted` wherever the main thread
is, so every `finally` and `with` on the way out runs: the local runner kills the process groups
it started (probes lead their own session, so they never see the terminal's SIGINT and would
outlive the tool otherwise), TemporaryDirectory removes its folder, `bench` marks its results
file incomplete. The default actions would skip all of that (SIGTERM and SIGHUP end the process
on the spot). The exit code is the shell's convention, 128 + the signal number.

`Interrupted` is a BaseException, like KeyboardInterrupt, so `except Exception` blocks (which
report errors as data) do not swallow it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A signal asked the command to stop. `notes` collects what was done about it on the way
    out (e.g. "results file marked incomplete"), for the one line the CLI prints."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.notes: list[str] = []
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        return "; ".join([f"interrupted by {self.name}", *self.notes])


_state = {"raised": False, "active": False}


def interrupted(signum: int) -> Interrupted:
    """The exception for `signum`, counted as the command's one interrupt (see _raise)."""
    _state["raised"] = True
    return Interrupted(signum)


def _raise(signum, frame):
    # One exception per command: a second signal while the first unwinds (a user pressing
    # Ctrl-C twice, a CI runner repeating SIGTERM) would interrupt the cleanup itself.
    if _state["raised"]:
        return
    raise interrupted(signum)


@contextlib.contextmanager
def handle_signals():
    """Turn SIGINT, SIGTERM and SIGHUP into `Interrupted` for the duration; restore on exit.

    Only the main thread can install handlers; elsewhere (a library caller's thread) this
    changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(raised=False, active=True)
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        _state["active"] = False
        for s, handler in previous.items():
            signal.signal(s, handler)


def reinstall() -> None:
    """Take the signals back after a library installed its own handlers (torch's elastic
    launcher does, and does not restore ours), if `handle_signals` is in effect."""
    if _state["active"] and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise)
