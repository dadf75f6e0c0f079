"""GitHub Actions job summary: the Markdown report, appended to $GITHUB_STEP_SUMMARY when set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def append_step_summary(markdown: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Append to the step's summary file; return its path, or None outside GitHub Actions.

    Appended, never overwritten: earlier steps of the job (and earlier benches of this step)
    wrote there too, and the runner renders the whole file at the end of the step.
    """
    name = environ.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    with path.open("a", encoding="utf-8") as f:
        # Sections from different writers must not run together into one paragraph.
        if path.stat().st_size:
            f.write("\n")
        f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
