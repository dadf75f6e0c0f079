"""The results file: a versioned JSON document every report is rendered from.

Schema `edgedistill.results/2`, documented field by field in docs/results-schema.md:
  schema, created, run, environment, reference, targets[{…, results[…]}], verdict, checks[…],
  summary
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from edgedistill.artifacts import atomic_write_json
from edgedistill.errors import UsageError

SCHEMA = "edgedistill.results/2"
# The cold-start parts, in the order they happen; they add up to cold.total_ms.
COLD_PARTS = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "first_inference_ms")


def new_results(run: str, environment: dict, reference: dict) -> dict:
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "environment": environment,
        "reference": reference,
        "targets": [],
        "verdict": None,
        "checks": [],
    }


def write_results(path: Path, results: dict) -> None:
    atomic_write_json(path, results)


def load_results(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"results file not found: {path}", "run `edgedistill bench` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not a JSON results file ({e})") from None
    found = data.get("schema") if isinstance(data, dict) else None
    if found != SCHEMA:
        older = isinstance(found, str) and found.startswith("edgedistill.results/")
        raise UsageError(f"{path}: expected schema {SCHEMA!r}, found {found!r}",
                         "re-run `edgedistill bench` with this version to measure again" if older else None)
    return data
