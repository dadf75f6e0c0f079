"""Skip a stage whose inputs and settings have not changed: a manifest beside its outputs."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from edgedistill import __version__
from edgedistill.artifacts import atomic_write_json


def stage_key(**inputs: Any) -> str:
    blob = json.dumps({"tool": __version__, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Stage:
    def __init__(self, run_dir: Path, name: str, key: str):
        self.dir = Path(run_dir) / name
        self.key = key
        self.manifest_path = self.dir / "manifest.json"

    def cached(self) -> dict | None:
        """The manifest of a complete earlier run with the same key, else None."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if manifest.get("key") != self.key:
            return None
        if not all(Path(p).exists() for p in manifest.get("files", [])):
            return None
        return manifest

    def begin(self) -> Path:
        """Invalidate the old manifest first, so a run that dies midway is never taken as done."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        return self.dir

    def commit(self, files: list[Path], **outputs: Any) -> dict:
        manifest = {"key": self.key, "finished": time.time(), "files": [str(f) for f in files], **outputs}
        atomic_write_json(self.manifest_path, manifest)
        return manifest
