"""The results file: a versioned JSON document every report is rendered from.

Schema `edgedistill.results/3`, documented field by field in docs/results-schema.md:
  schema, created, run, complete, missing, interrupted, environment, reference,
  targets[{…, results[…]}], verdict, checks[…], summary

`bench` writes the file before its first measurement and again after each artifact; until the
last one it says `complete: false` and lists the planned artifacts not measured yet, so a run
that was interrupted or crashed leaves a file that says so and never passes a gate.
"""

from __future__ import annotations

import json
import reprlib
from datetime import datetime, timezone
from pathlib import Path

from edgedistill.artifacts import atomic_write_json
from edgedistill.errors import UsageError

SCHEMA = "edgedistill.results/3"
# The cold-start parts, in the order they happen; they add up to cold.total_ms.
COLD_PARTS = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "first_inference_ms")
# What a wrong value looked like, bounded in length and depth whatever the file holds.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 2, 3, 3, 40, 40
_RERUN = "re-run `edgedistill bench` with this version to measure again"


def dig(doc, *keys):
    """doc[k1][k2]…, or None where a key is absent or a block is null (a skipped result has no
    `warm`; a failed cache run has no `miss`): readers never trip on an optional block."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def new_results(run: str, environment: dict, reference: dict) -> dict:
    """An empty, incomplete document: nothing planned or measured yet."""
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "complete": False,
        "missing": [],
        "interrupted": None,
        "environment": environment,
        "reference": reference,
        "targets": [],
        "verdict": None,
        "checks": [],
    }


def write_results(path: Path, results: dict) -> None:
    atomic_write_json(path, results)


def incomplete_reason(results: dict) -> str | None:
    """Why a results file cannot be gated as it is (it is incomplete), or None when complete."""
    if results.get("complete"):
        return None
    missing = [f"{m['target']}/{m['artifact']}" for m in results.get("missing") or []]
    signal = results.get("interrupted")
    how = (f"the run was interrupted by {signal}" if signal
           else "the run did not finish (it stopped on an error, crashed or was killed)")
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        return f"results incomplete: {how}; not measured: {shown}"
    return f"results incomplete: {how} before every artifact was planned and measured"


def shown_verdict(results: dict) -> str | None:
    """The verdict a report shows: INCONCLUSIVE for an incomplete file, whatever it recorded."""
    return "INCONCLUSIVE" if incomplete_reason(results) else results.get("verdict")


def _describe_location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _structure_error(path: Path, error) -> UsageError:
    """One line naming the first field that does not fit the schema."""
    errors = error.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = _describe_location(tuple(p for p in first["loc"] if not str(p).startswith("function-")))
    if first["type"] == "missing":
        what = "required, missing"
    else:
        what = f"{first['msg'][:1].lower()}{first['msg'][1:]}, found {_SHORT.repr(first.get('input'))}"
    return UsageError(f"{path}: field {where}: {what}{more}",
                      "the file does not have the structure of " + SCHEMA + "; " + _RERUN)


def load_results(path: Path) -> dict:
    """Read and validate a results file; every way it can be wrong is a UsageError (exit 2)."""
    from pydantic import ValidationError

    from edgedistill.report.schema import ResultsFile

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, expected a results file (results.json)",
                         f"pass the file inside it, e.g. {path / 'results.json'}")
    if not path.is_file():
        raise UsageError(f"results file not found: {path}", "run `edgedistill bench` first")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot read the results file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a JSON results file (not UTF-8 text: binary or another encoding)") from None
    except ValueError as e:  # JSONDecodeError, and an integer too long to read (over 4300 digits)
        raise UsageError(f"{path}: not a JSON results file ({e})") from None
    except RecursionError:
        raise UsageError(f"{path}: not a results file (JSON nested too deeply to read)") from None
    found = data.get("schema") if isinstance(data, dict) else None
    if found != SCHEMA:
        older = isinstance(found, str) and found.startswith("edgedistill.results/")
        raise UsageError(f"{path}: expected schema {SCHEMA!r}, found {found!r}", _RERUN if older else None)
    try:
        ResultsFile.model_validate(data)
    except ValidationError as e:
        raise _structure_error(path, e) from None
    except RecursionError:
        raise UsageError(f"{path}: not a results file (JSON nested too deeply to read)") from None
    return data
