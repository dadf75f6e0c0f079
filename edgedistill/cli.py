"""Thin Click layer: parse flags, load config, call edgedistill.api, render, exit with the code.

Runtimes and torch are imported only inside commands, so `edgedistill --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from edgedistill import __version__
from edgedistill.errors import EXIT_INTERNAL, EXIT_USAGE, EdgeDistillError

_DEBUG = {"on": False}


def _config_options(f):
    """Flags shared by the pipeline verbs; each overrides the same key of edgedistill.toml."""
    options = [
        click.option("--config", "-c", "config_path", type=click.Path(path_type=Path),
                     help="edgedistill.toml (default: ./edgedistill.toml if present)."),
        click.option("--teacher", help="Teacher: pkg.mod:factory or a torch.export .pt2."),
        click.option("--teacher-weights", type=click.Path(path_type=Path),
                     help="Teacher weights: .safetensors or a state_dict .pt (weights_only)."),
        click.option("--student", help="Student: pkg.mod:factory."),
        click.option("--data", help="Data: builtin:digits, a .npz with x and y, or pkg.mod:factory."),
        click.option("--epochs", type=int, help="Distillation epochs."),
        click.option("--backend", "backends", multiple=True,
                     help="Export to this backend (repeatable): onnxruntime, openvino, executorch, tensorrt."),
        click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
                     help="Target profile .toml (repeatable; default targets/local-cpu.toml)."),
        click.option("--run-name", help="Name of the run folder under --out-dir."),
        click.option("--out-dir", type=click.Path(path_type=Path), help="Where run folders go (default runs/)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print the results JSON on stdout."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _workspace(opts: dict):
    from edgedistill.api import open_workspace
    from edgedistill.config import load_config

    path = opts["config_path"]
    if path is None and Path("edgedistill.toml").is_file():
        path = Path("edgedistill.toml")
    overrides = {
        "teacher.spec": opts["teacher"], "teacher.weights": opts["teacher_weights"],
        "student.spec": opts["student"], "data.spec": opts["data"], "distill.epochs": opts["epochs"],
        "export.backends": list(opts["backends"]) or None, "bench.targets": list(opts["targets"]) or None,
        "run.name": opts["run_name"], "run.out_dir": opts["out_dir"],
    }
    return open_workspace(load_config(path, overrides))


def _ui(opts: dict):
    from edgedistill.ui import UI

    return UI(quiet=opts["quiet"] or opts["as_json"], debug=_DEBUG["on"])


def _handle_errors(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except EdgeDistillError as e:
            if _DEBUG["on"]:
                raise
            click.echo(f"error: {e.message}", err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: say so plainly, trace only with --debug
            if _DEBUG["on"]:
                raise
            click.echo(f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _render_results(results: dict, ui, as_json: bool, results_path: Path) -> int:
    from edgedistill.gate import EXIT_CODES
    from edgedistill.report.table import print_results

    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    else:
        print_results(results, ui.out)
        ui.out.print(f"results: {results_path}  report: {results_path.with_name('report.md')}")
    return EXIT_CODES[results["verdict"]]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgedistill")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def cli(debug: bool):
    """Distill a small student from a PyTorch teacher, compress it, export it to edge runtimes,
    and benchmark cold start, latency, memory, size and accuracy against per-target budgets.

    \b
    Exit codes: 0 pass · 1 a budget failed · 2 usage or config error · 3 internal error ·
    4 invalid measurement · 5 inconclusive (timeout, crash, unreachable) · 6 refused for safety.

    \b
    Example (offline, built-in digits teacher and student):
      edgedistill compress
    """
    _DEBUG["on"] = debug
    if not debug:
        import warnings

        # Exporters and quantizers warn about their own deprecations; --debug shows them.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


@cli.command()
@_config_options
@_handle_errors
def compress(**opts):
    """The whole pipeline: distill, quantize, export, verify, benchmark, gate.

    The exit code carries the verdict against the targets' budgets.

    \b
    Examples:
      edgedistill compress
      edgedistill compress --epochs 4 --backend onnxruntime --target targets/local-cpu.toml
      edgedistill compress -c edgedistill.toml --json > results.json
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    results = api.compress(ws, ui)
    sys.exit(_render_results(results, ui, opts["as_json"], ws.run_dir / "results.json"))


@cli.command()
@_config_options
@_handle_errors
def distill(**opts):
    """Distill the student from the teacher (Hinton KD: KL x T^2 + alpha x CE).

    \b
    Example:
      edgedistill distill --teacher mypkg.models:resnet --teacher-weights teacher.safetensors \\
                          --student mypkg.models:tiny --data train.npz --epochs 20
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    d = api.distill(ws, ui)
    out = {"weights": str(ws.run_dir / "distill" / "student.safetensors"), **d.metrics}
    click.echo(json.dumps(out, indent=2) if opts["as_json"] else f"student weights: {out['weights']}")


@cli.command()
@_config_options
@_handle_errors
def export(**opts):
    """Export (and quantize) the distilled student for each backend, and verify each artifact
    against PyTorch on held-out inputs.

    \b
    Example:
      edgedistill export --backend onnxruntime --backend openvino
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    artifacts = api.export(ws, ui)
    if opts["as_json"]:
        click.echo(json.dumps([a.to_json() for a in artifacts], indent=2, default=str))
    else:
        for a in artifacts:
            v = a.meta["verification"]
            click.echo(f"{a.name:32s} {a.path}  max abs {v['max_abs']:.2e}  top-1 agreement {v['top1_agreement']:.2%}")


@cli.command()
@_config_options
@_handle_errors
def bench(**opts):
    """Benchmark every artifact on every target: cold start (fresh process), warm latency
    percentiles, peak memory, size and accuracy. Writes results.json and report.md.

    \b
    Example:
      edgedistill bench --target targets/local-cpu.toml
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    results = api.bench(ws, ui)
    sys.exit(_render_results(results, ui, opts["as_json"], ws.run_dir / "results.json"))


@cli.command()
@click.argument("results_path", type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
              help="Gate against this target file's budgets instead of those recorded (matched by name).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_handle_errors
def gate(results_path: Path, targets: tuple[Path, ...], as_json: bool):
    """Turn a results file into a verdict and exit code against budgets.

    \b
    Example:
      edgedistill gate runs/default/results.json --target targets/local-cpu.toml
    """
    from edgedistill import api
    from edgedistill.gate import EXIT_CODES
    from edgedistill.report.table import print_checks
    from edgedistill.ui import UI

    results = api.gate(results_path, list(targets))
    if as_json:
        click.echo(json.dumps({"verdict": results["verdict"], "checks": results["checks"]}, indent=2))
    else:
        print_checks(results, UI().out)
    sys.exit(EXIT_CODES[results["verdict"]])


@cli.command()
@click.argument("results_path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv"]), default="md", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write here instead of stdout.")
@_handle_errors
def report(results_path: Path, fmt: str, output: Path | None):
    """Render a report from a results file alone.

    \b
    Example:
      edgedistill report runs/default/results.json --format md -o report.md
    """
    from edgedistill.artifacts import atomic_write_text
    from edgedistill.report import csv as csv_report
    from edgedistill.report import markdown
    from edgedistill.report.results import load_results

    results = load_results(results_path)
    text = markdown.render(results) if fmt == "md" else csv_report.render(results)
    if output:
        atomic_write_text(output, text)
    else:
        click.echo(text)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_handle_errors
def doctor(as_json: bool):
    """List every backend: usable here with its version, or why not and the extra that fixes it.

    \b
    Example:
      edgedistill doctor
    """
    from edgedistill import api
    from edgedistill.report.table import print_doctor
    from edgedistill.ui import UI

    rows = api.doctor()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_doctor(rows, UI().out)


def main() -> None:
    try:
        cli.main(standalone_mode=False, prog_name="edgedistill")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE if e.exit_code == 2 else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
