"""Skip a stage whose inputs and settings have not changed: a manifest beside its outputs.

The manifest records every output's sha256 and size. A stage is reused only when each output
still has them: a file that was edited, flipped or truncated on disk since it was written (and
verified) makes the stage run again, and the caller says why (`Stage.changed`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from edgedistill import __version__
from edgedistill.artifacts import atomic_write_json, sha256_file

MANIFEST = "manifest.json"


def stage_key(**inputs: Any) -> str:
    blob = json.dumps({"tool": __version__, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_record(path: Path) -> dict:
    path = Path(path)
    return {"path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size}


def _file_problem(entry: object) -> str | None:
    """Why a manifest's file entry no longer describes the file on disk, or None."""
    if not isinstance(entry, dict) or not {"path", "sha256", "size"} <= entry.keys():
        return f"an entry without sha256 and size ({entry!r}: written by an older version)"
    path = Path(str(entry["path"]))
    try:
        size = path.stat().st_size
    except OSError:
        return f"{path} is missing"
    if size != entry["size"]:
        return f"{path} changed size ({entry['size']} -> {size} bytes)"
    if sha256_file(path) != entry["sha256"]:
        return f"{path} changed on disk (sha256 differs from the one recorded)"
    return None


class Stage:
    def __init__(self, run_dir: Path, name: str, key: str):
        self.dir = Path(run_dir) / name
        self.name = name
        self.key = key
        self.manifest_path = self.dir / MANIFEST
        self.changed: str | None = None  # set by cached(): why outputs of a same-key run are not reused

    def cached(self) -> dict | None:
        """The manifest of a complete earlier run with the same key whose outputs are unchanged,
        else None (with the reason in `changed` when the key matched but an output did not)."""
        self.changed = None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key:
            return None
        files = manifest.get("files")
        if not isinstance(files, list):
            self.changed = "its manifest lists no files"
            return None
        for entry in files:
            if problem := _file_problem(entry):
                self.changed = problem
                return None
        return manifest

    def begin(self) -> Path:
        """Invalidate the old manifest first, so a run that dies midway is never taken as done."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        return self.dir

    def commit(self, files: list[Path], **outputs: Any) -> dict:
        manifest = {"key": self.key, "finished": time.time(), "files": [file_record(f) for f in files],
                    **outputs}
        atomic_write_json(self.manifest_path, manifest)
        return manifest


def recorded_by_pipeline(path: Path, levels: int = 3, *, sha256: str | None = None) -> bool:
    """Whether a manifest of the run folder the file lies in lists it with its current sha256:
    the pipeline wrote it, and it has not changed since. Looks in the file's folder and up to
    `levels` folders above it (a stage's outputs lie in subfolders of the stage folder).
    `sha256`: the digest of the bytes the caller already read and will load, so the answer is
    about those bytes and not about the file as it may be a moment later."""
    path = Path(path).resolve()
    digest = sha256
    for folder in list(path.parents)[:levels + 1]:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entries = manifest.get("files") if isinstance(manifest, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and _names(path, str(entry.get("path", ""))):
                digest = digest or sha256_file(path)
                if entry.get("sha256") == digest:
                    return True
    return False


def _names(path: Path, recorded: str) -> bool:
    """Whether a manifest's path names `path` (resolved). Paths are recorded as the stage wrote
    them, relative to the folder it ran in, which need not be today's: a relative one names the
    file when it is the tail of its path."""
    entry = Path(recorded)
    if entry.is_absolute():
        return entry.resolve() == path
    parts = entry.parts
    return bool(parts) and ".." not in parts and path.parts[-len(parts):] == parts
