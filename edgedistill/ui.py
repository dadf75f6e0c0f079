"""Progress and messages: a live bar on a terminal, plain lines in CI logs, nothing with --quiet."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


class UI:
    def __init__(self, quiet: bool = False, debug: bool = False):
        self.quiet = quiet
        self.debug = debug
        # Off a terminal, lines are not wrapped: a sha256 or a path split across lines in a CI
        # log cannot be copied.
        self.err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
        # CI logs and pipes get a fixed width wide enough that tables do not wrap.
        self.out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)

    def quiet_library_logs(self) -> None:
        """Exporters log chatter that is not the user's business (torch.onnx's "torchvision is not
        installed", torchao's optional CUDA kernels). Call after importing torch, which resets
        its loggers' levels on import. --debug keeps it all."""
        if self.debug:
            return
        import logging

        for name in ("torch.onnx", "torch.export", "torch._export", "torch.utils._pytree", "torchao", "nncf"):
            logging.getLogger(name).setLevel(logging.ERROR)

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal

    def step(self, message: str) -> None:
        if not self.quiet:
            # Messages carry user text (paths, keys like "[teacher]"): never read it as markup.
            self.err.print(f"[bold cyan]›[/] {escape(message)}")

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"  {message}", markup=False)

    @contextlib.contextmanager
    def progress(self):
        """A rich Progress on a terminal; None elsewhere (callers then log plain lines)."""
        if self.quiet or not self.interactive:
            yield None
            return
        with Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.err, transient=False,
        ) as progress:
            yield progress
