"""Thin Click layer: parse flags, load config, call edgedistill.api, render, exit with the code.

Runtimes and torch are imported only inside commands, so `edgedistill --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import click

from edgedistill import __version__
from edgedistill.backends.base import BACKENDS
from edgedistill.errors import EXIT_INTERNAL, EXIT_USAGE, EdgeDistillError
from edgedistill.regression import ALPHA, MAX_COLD_REGRESSION_PCT, MAX_REGRESSION_PCT

_DEBUG = {"on": False}


def _check_sha256(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    import re

    from edgedistill.config import SHA256_PATTERN

    for value in values:
        if not re.fullmatch(SHA256_PATTERN, value):
            raise click.BadParameter(f"expected 64 hexadecimal digits (a sha256), found {value!r}")
    return values


def _config_options(f):
    """Flags shared by the pipeline verbs; each overrides the same key of edgedistill.toml."""
    options = [
        click.option("--config", "-c", "config_path", type=click.Path(path_type=Path),
                     help="edgedistill.toml (default: ./edgedistill.toml if present)."),
        click.option("--teacher", help="Teacher: pkg.mod:factory, a torch.export .pt2 (with --trust-sha256), "
                                       "an ONNX file (run through ONNX Runtime) or hf:<folder>."),
        click.option("--teacher-weights", type=click.Path(path_type=Path),
                     help="Teacher weights: .safetensors or a state_dict .pt (weights_only)."),
        click.option("--student", help="Student: pkg.mod:factory, prune:<width> (the teacher, structurally "
                                       "pruned) or shallow:<k> (every k-th block of the teacher)."),
        click.option("--data", help="Data: builtin:digits, a .npz with x and y, or pkg.mod:factory."),
        click.option("--trust-sha256", "trust_sha256", multiple=True, metavar="HEX", callback=_check_sha256,
                     help="Load a model file that can run code (a .pt2 program, a pickle weights_only "
                          "refuses) when its sha256 is HEX (repeatable). See docs/security.md."),
        click.option("--epochs", type=int, help="Distillation epochs."),
        click.option("--resume/--restart", "resume", default=None,
                     help="Continue from this run's checkpoint when there is one (the default), "
                          "or ignore it and train from the start."),
        click.option("--backend", "backends", multiple=True,
                     help=f"Export to this backend (repeatable): {', '.join(BACKENDS)}."),
        click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
                     help="Target profile .toml (repeatable; default targets/local-cpu.toml)."),
        click.option("--run-name", help="Name of the run folder under --out-dir."),
        click.option("--out-dir", type=click.Path(path_type=Path), help="Where run folders go (default runs/)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print the results JSON on stdout."),
    ]
    return _with_options(f, options)


def _with_options(f, options: list):
    """Apply click options so that --help lists them in the order given."""
    for option in reversed(options):
        f = option(f)
    return f


def _bench_options(f):
    """Flags of the verbs that measure."""
    return click.option(
        "--cold-disk", is_flag=True, default=None,
        help="Evict model files from the OS page cache before each cold run (needs read access "
             "only); the results say whether it worked.")(f)


def _workspace(opts: dict):
    from edgedistill.api import open_workspace
    from edgedistill.config import load_config

    path = opts["config_path"]
    if path is None and Path("edgedistill.toml").exists():  # a folder of that name is an error, not ignored
        path = Path("edgedistill.toml")
    # key of edgedistill.toml: (the flag that overrides it, its value; None = not given)
    overrides = {
        "teacher.spec": ("--teacher", opts["teacher"]),
        "teacher.weights": ("--teacher-weights", opts["teacher_weights"]),
        "student.spec": ("--student", opts["student"]), "data.spec": ("--data", opts["data"]),
        "distill.epochs": ("--epochs", opts["epochs"]),
        "distill.restart": ("--restart", None if opts.get("resume") is None else not opts["resume"]),
        "export.backends": ("--backend", list(opts["backends"]) or None),
        "bench.targets": ("--target", list(opts["targets"]) or None),
        "run.name": ("--run-name", opts["run_name"]), "run.out_dir": ("--out-dir", opts["out_dir"]),
        "bench.cold_disk": ("--cold-disk", opts.get("cold_disk")),
    }
    cfg = load_config(path, {key: value for key, (_, value) in overrides.items()},
                      flags={key: flag for key, (flag, _) in overrides.items()})
    return open_workspace(cfg, trust_sha256=opts["trust_sha256"])


def _ui(opts: dict):
    from edgedistill.ui import UI

    return UI(quiet=opts["quiet"] or opts["as_json"], debug=_DEBUG["on"])


def _one_line(text: str) -> str:
    """Escape what is not printable (newlines, form feeds, terminal escapes in a file name the
    message quotes), so an error stays one line that says what it says."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _handle_errors(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except EdgeDistillError as e:
            if _DEBUG["on"]:
                raise
            click.echo(f"error: {_one_line(e.message)}", err=True)
            # A table (expected vs found inputs) goes under the line, each row escaped the same way.
            for row in getattr(e, "table", None) or []:
                click.echo(f"  {_one_line(row)}", err=True)
            if e.hint:
                click.echo(f"  hint: {_one_line(e.hint)}", err=True)
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
        reports = ", ".join(str(results_path.with_name(n)) for n in ("report.md", "report.html", "junit.xml"))
        ui.out.print(f"results: {results_path}  reports: {reports}")
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
@_bench_options
@click.option("--search", is_flag=True, help="Search pruning ratios x precisions x backends for the most "
              "accurate student that meets every budget, by measuring each ([search] sets the space).")
@click.option("--first", is_flag=True, help="Stop the search at the first student form with a "
              "candidate that meets every budget (implies --search).")
@_handle_errors
def compress(search: bool, first: bool, **opts):
    """The whole pipeline: distill, prune, quantize, export, verify, benchmark, gate.

    The exit code carries the verdict against the targets' budgets. With --search it measures
    pruning ratios x precisions x backends and keeps the most accurate candidate that meets
    every budget (exit 1, naming the closest one, when none does).

    \b
    Examples:
      edgedistill compress
      edgedistill compress --epochs 4 --backend onnxruntime --target targets/local-cpu.toml
      edgedistill compress --search --first --target targets/jetson-orin-nano.toml
      edgedistill compress -c edgedistill.toml --json > results.json
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    results = api.compress(ws, ui, search=search, first=first)
    sys.exit(_render_results(results, ui, opts["as_json"], ws.run_dir / "results.json"))


def _launch_options(f):
    """torchrun's options for data-parallel training (same names, same meaning)."""
    options = [
        click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Training processes on this node (data-parallel, gloo)."),
        click.option("--nnodes", default="1", show_default=True,
                     help="Nodes in the job: N, or MIN:MAX for an elastic job."),
        click.option("--rdzv-endpoint", help="HOST[:PORT] where the nodes meet (node 0's address; "
                                             "port 29500 if none). Needed with --nnodes > 1."),
        click.option("--rdzv-id", default="edgedistill", show_default=True,
                     help="Job id, the same on every node."),
        click.option("--rdzv-backend", type=click.Choice(["c10d", "static"]), default="c10d", show_default=True,
                     help="c10d: ranks assigned at rendezvous; static: give each node --node-rank."),
        click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
                     help="This node's rank (static rendezvous only)."),
        click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Restart failed workers this many times; they resume from the last checkpoint."),
    ]
    return _with_options(f, options)


@cli.command()
@_config_options
@_launch_options
@_handle_errors
def distill(**opts):
    """Distill the student from the teacher (Hinton KD: KL x T^2 + alpha x CE).

    With --nproc-per-node N (and --nnodes, --rdzv-* for several machines) it trains
    data-parallel with torch.distributed; a run started by torchrun works the same.

    \b
    Examples:
      edgedistill distill --teacher mypkg.models:resnet --teacher-weights teacher.safetensors \\
                          --student mypkg.models:tiny --data train.npz --epochs 20
      edgedistill distill -c edgedistill.toml --nproc-per-node 2
      edgedistill distill -c edgedistill.toml --nnodes 2 --nproc-per-node 8 \\
                          --rdzv-endpoint 10.0.0.1:29500 --rdzv-id job42    # on each node
    """
    import os

    from edgedistill import api
    from edgedistill.launch import LaunchOptions, launch_distill, run_in_world

    ws, ui = _workspace(opts), _ui(opts)
    launch = LaunchOptions(
        nproc_per_node=opts["nproc_per_node"], nnodes=opts["nnodes"], node_rank=opts["node_rank"],
        rdzv_backend=opts["rdzv_backend"], rdzv_endpoint=opts["rdzv_endpoint"], rdzv_id=opts["rdzv_id"],
        max_restarts=opts["max_restarts"],
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: this process is one rank
        metrics = run_in_world(ws.cfg, quiet=ui.quiet, debug=_DEBUG["on"], trusted=ws.trusted)
        if metrics is None:
            return  # rank 0 reports
    elif launch.parallel:
        metrics = launch_distill(ws.cfg, launch, quiet=ui.quiet, debug=_DEBUG["on"], trusted=ws.trusted)
    else:
        metrics = api.distill(ws, ui).metrics
    if metrics is None:  # a node without rank 0: that node reports
        ui.note("done; rank 0 wrote the student")
        return
    out = {"weights": str(ws.run_dir / "distill" / "student.safetensors"), **metrics}
    click.echo(json.dumps(out, indent=2) if opts["as_json"] else f"student weights: {out['weights']}")


_NOT_FOR_DISTILL_ONLY = ("backends", "targets")  # export and bench flags


def _distill_config_options(f):
    """The config flags of a verb that needs only the distill stage: no --backend, no --target."""
    f = _config_options(f)
    f.__click_params__ = [p for p in f.__click_params__ if p.name not in _NOT_FOR_DISTILL_ONLY]
    return f


@cli.command("suggest-labels")
@_distill_config_options
@click.option("--top", type=int, metavar="N", help="Write the N highest-ranked samples (default: all).")
@click.option("--top-percent", type=float, metavar="P",
              help="Write the top P % of the unlabelled samples (rounded up) instead of --top.")
@click.option("--output", "-o", type=click.Path(path_type=Path), metavar="FILE",
              help="CSV to write (atomically; default: <run folder>/label-suggestions.csv).")
@_handle_errors
def suggest_labels(**opts):
    """Rank the unlabelled training samples by how informative a label would be; write a CSV.

    Reuses the run's distilled student when nothing changed (else distills first), then scores
    every unlabelled training sample (label -1, or hidden by data.label_fraction):
    teacher_entropy = entropy of the teacher's softmax / log(classes); disagreement = the
    Jensen-Shannon divergence (base 2) of teacher and student softmax; score = their mean
    (both in [0, 1]). For distill.objective = "embedding", score = disagreement = 1 - cosine
    of student and teacher embeddings (teacher uncertainty does not apply). The CSV has
    rank,index,score,teacher_entropy,disagreement; index is the sample's row in your data
    file. Exit 2 when no training sample is unlabelled.

    \b
    Example:
      edgedistill suggest-labels --data pool.npz --top-percent 5 -o to_label.csv
    """
    from edgedistill import api

    ws, ui = _workspace({"backends": (), "targets": (), **opts}), _ui(opts)
    output = opts["output"] or ws.run_dir / "label-suggestions.csv"
    summary = api.suggest_labels(ws, ui, output, top=opts["top"], top_percent=opts["top_percent"])
    click.echo(json.dumps(summary, indent=2) if opts["as_json"] else
               f"wrote the top {summary['written']} of {summary['unlabelled']} unlabelled samples to {output}")


@cli.command()
@_config_options
@_handle_errors
def export(**opts):
    """Export (and quantize) the distilled student for each backend, and verify each artifact
    against PyTorch on held-out inputs. With [compress.prune], the pruned student too.

    \b
    Example:
      edgedistill export --backend onnxruntime --backend openvino
    """
    from edgedistill import api

    ws, ui = _workspace(opts), _ui(opts)
    api.check_backends_asked(ws.cfg)  # before training: a refusal should not cost minutes
    artifacts, _ = api.export_all(ws, ui, api.distill(ws, ui))  # with [compress.prune], the pruned student's too
    if opts["as_json"]:
        click.echo(json.dumps([a.to_json() for a in artifacts], indent=2, default=str))
    else:
        for a in artifacts:
            click.echo(f"{a.name:40s} {a.path}  {api.verification_summary(a.meta['verification'])}")


_SHAPE_FORMS = re.compile(r"^(?P<name>[^=\[\]]+)(?:=(?P<x>\d+(?:x\d+)*)|\[(?P<list>\d+(?:,\d+)*)\])$")


def _parse_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    """--shape NAME=1x3x224x224 or NAME[1,3,224,224] (benchmark_app's -shape), repeatable."""
    from edgedistill.errors import UsageError

    shapes: dict[str, list[int]] = {}
    for value in values:
        m = _SHAPE_FORMS.match(value.replace(" ", ""))
        if not m:
            raise UsageError(f"--shape: expected NAME=1x3x224x224 or NAME[1,3,224,224], found {value!r}",
                             "name the input, then its dimensions separated by x")
        dims = [int(d) for d in (m["x"] or m["list"]).replace(",", "x").split("x")]
        if any(d < 1 for d in dims):
            raise UsageError(f"--shape {value}: expected every dimension to be at least 1, found "
                             f"{min(dims)}")
        if m["name"] in shapes:
            raise UsageError(f"--shape: expected each input once, found {m['name']!r} twice")
        shapes[m["name"]] = dims
    return shapes


# Which of bench's options apply to which form; --help lists them under these headings.
_BENCH_SECTIONS = {
    "Model files (edgedistill bench PATH ...)": ("threads", "shapes", "reference", "output"),
    "Both forms": ("data", "backends", "targets", "cold_disk", "as_json", "quiet", "help"),
    "The pipeline's artifacts (edgedistill bench, no PATH)": (
        "config_path", "teacher", "teacher_weights", "student", "trust_sha256", "epochs", "resume",
        "run_name", "out_dir"),
}


class _BenchCommand(click.Command):
    """bench's --help in sections: what applies to model files, to both forms, to the pipeline."""

    def format_options(self, ctx, formatter):
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        for title, names in _BENCH_SECTIONS.items():
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _bench_file_options(f):
    options = [
        click.option("--threads", type=click.IntRange(1, 4096), help="Threads (overrides the target's)."),
        click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224",
                     help="Static shape for an input with dynamic dimensions, like benchmark_app -shape "
                          "(repeatable; NAME[1,3,224,224] works too)."),
        click.option("--reference", type=click.Path(path_type=Path), metavar="PATH",
                     help="Another model file to compare outputs with (top-1 agreement, max abs diff, "
                          "cosine), e.g. the FP32 model of an INT8 one; measured too, never gated."),
        click.option("--output", "-o", type=click.Path(path_type=Path),
                     help="Results file to write (default runs/bench/results.json; reports beside it)."),
    ]
    return _with_options(f, options)


_PIPELINE_ONLY = {"config_path": "--config", "teacher": "--teacher", "teacher_weights": "--teacher-weights",
                  "student": "--student", "trust_sha256": "--trust-sha256", "epochs": "--epochs",
                  "resume": "--resume/--restart", "run_name": "--run-name", "out_dir": "--out-dir"}
_FILES_ONLY = {"threads": "--threads", "shapes": "--shape", "reference": "--reference", "output": "--output"}


def _unused(opts: dict, names: dict[str, str]) -> str | None:
    return next((flag for key, flag in names.items() if opts.get(key) not in (None, (), {}, False)), None)


@cli.command(cls=_BenchCommand)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[PATH]...")
@_bench_file_options
@_config_options
@_bench_options
@_handle_errors
def bench(paths: tuple[Path, ...], **opts):
    """Benchmark model files, or every artifact the pipeline made, on every target: cold start
    (fresh processes, in parts), warm latency percentiles, peak memory, size, accuracy, integrity
    checks. Writes results.json and the reports; the exit code carries the verdict.

    PATH: an .onnx (with its external data), an OpenVINO .xml (with its .bin), an ExecuTorch
    .pte or an ONNX Runtime .ort. Its runtime follows from the file; an .onnx runs on ONNX Runtime
    unless --backend names others. Without --data, inputs are drawn at each input's declared
    shape and dtype and accuracy is not measured. A target without budgets (the default: the
    local CPU, measured without budgets) is a measurement: exit 0, nothing gated.

    \b
    Examples:
      edgedistill bench model.onnx
      edgedistill bench model.onnx --backend onnxruntime --backend openvino --threads 2
      edgedistill bench model.xml --shape input=1x3x224x224 --target targets/local-cpu.toml
      edgedistill bench model_int8.onnx --reference model_fp32.onnx --data val.npz -o out/results.json
      edgedistill bench model.pte model.ort --json > results.json
      edgedistill bench --target targets/local-cpu.toml        # the pipeline's artifacts
    """
    from edgedistill import api
    from edgedistill.errors import UsageError

    if not paths:
        if flag := _unused(opts, _FILES_ONLY):
            raise UsageError(f"{flag} applies to model files (edgedistill bench PATH ...); no PATH was given",
                             "name the model files to measure, or drop the flag")
        ws, ui = _workspace(opts), _ui(opts)
        results = api.bench(ws, ui)
        sys.exit(_render_results(results, ui, opts["as_json"], ws.run_dir / "results.json"))
    if flag := _unused(opts, _PIPELINE_ONLY):
        raise UsageError(f"{flag} applies to the pipeline's artifacts (edgedistill bench with no PATH), "
                         "not to model files", "drop it, or run bench without PATH")
    shapes = _parse_shapes(opts["shapes"])
    ui = _ui(opts)
    data = Path(opts["data"]) if opts["data"] is not None else None
    plan = api.plan_files(list(paths), backends=list(opts["backends"]), targets=list(opts["targets"]),
                          threads=opts["threads"], shapes=shapes, data=data,
                          reference=opts["reference"], output=opts["output"], on_step=ui.step)
    ui.note(plan.data_note)
    results = api.bench_files(plan, ui, cold_disk=bool(opts["cold_disk"]))
    sys.exit(_render_file_results(results, ui, opts["as_json"], plan.output))


# The options bench shares with the pipeline verbs mean something for model files too: say both.
_BENCH_HELP = {
    "data": "Model files: a .npz with one array per input name (or x), samples on axis 0; with y, top-1 "
            "is measured. Pipeline: builtin:digits, a .npz with x and y, or pkg.mod:factory.",
    "backends": "Model files: the runtimes to run an .onnx on (repeatable): onnxruntime (default), openvino, "
                "tensorrt. Pipeline: export to this backend (repeatable).",
    "targets": "Target profile .toml or a shipped name (repeatable). Default: targets/local-cpu.toml; for "
               "model files without its budgets (a measurement; --target local-cpu gates against them).",
}
for _param in bench.params:
    if _param.name in _BENCH_HELP:
        _param.help = _BENCH_HELP[_param.name]


def _render_file_results(results: dict, ui, as_json: bool, results_path: Path) -> int:
    from edgedistill.gate import measurement_exit_code
    from edgedistill.report.markdown import file_facts

    from edgedistill.report.markdown import problem_lines

    code = _render_results(results, ui, as_json, results_path)
    if results.get("not_gated"):
        code = measurement_exit_code(results)
    if not as_json:
        for line in file_facts(results):
            if line != results.get("not_gated"):
                ui.out.print(line, markup=False, highlight=False)
        for target in results["targets"]:
            for r in target["results"]:
                for line in problem_lines(r):
                    ui.out.print(f"{r['artifact']} {r['status'].upper()}: {line}", markup=False, highlight=False)
    if results.get("not_gated"):
        # On stderr, so it shows beside --json's document too.
        click.echo(f"{results['not_gated']} (exit {code})", err=True)
    return code


_REGRESSION_OPTIONS = [
    click.option("--max-regression", "max_regression", type=click.FloatRange(min=0), default=MAX_REGRESSION_PCT,
                 show_default=True, metavar="PCT",
                 help="A slowdown of the median warm run must exceed this many percent (and the base's "
                      "run-to-run spread) to count as a regression."),
    click.option("--max-cold-regression", "max_cold_regression", type=click.FloatRange(min=0),
                 default=MAX_COLD_REGRESSION_PCT,
                 show_default=True, metavar="PCT",
                 help="The same for the cold-start median (wider: fresh processes shift more between sessions)."),
    click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=ALPHA,
                 show_default=True,
                 help="Significance level: a regression also needs a one-sided Mann-Whitney U p-value over "
                      "runs below this (5 runs against 5 reach 0.004)."),
]


def _regression_options(f):
    return _with_options(f, _REGRESSION_OPTIONS)


@cli.command()
@click.argument("results_path", type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
              help="Gate against this target file's budgets instead of those recorded (matched by name).")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Also fail on a regression against this earlier results file (warm p50, cold start).")
@_regression_options
@click.option("--gate-cold-start", is_flag=True,
              help="Also fail on a cold-start regression (off by default: fresh processes on a shared "
                   "machine shift between sessions; the cold_start_ms budget still applies).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_handle_errors
def gate(results_path: Path, targets: tuple[Path, ...], baseline: Path | None, max_regression: float,
         alpha: float, max_cold_regression: float, gate_cold_start: bool, as_json: bool):
    """Turn a results file into a verdict and exit code against budgets.

    With --baseline, each student artifact's warm latency (and, with --gate-cold-start, its cold
    start) is also compared with the baseline's runs (fresh processes): a regression (exit 1) is
    a slowdown of the median run by more than --max-regression percent (cold start:
    --max-cold-regression) and more than the baseline's own run-to-run spread, that is also
    significant over runs (p < --alpha), so run-to-run noise does not fail a build. Run counts
    that cannot reach --alpha make the check INCONCLUSIVE (exit 5). Cold-start regressions are
    always reported.

    \b
    Examples:
      edgedistill gate runs/default/results.json --target targets/local-cpu.toml
      edgedistill gate head/results.json --baseline base/results.json --max-regression 10
    """
    from edgedistill import api
    from edgedistill.gate import EXIT_CODES
    from edgedistill.regression import notes
    from edgedistill.report.table import print_checks
    from edgedistill.ui import UI

    results = api.gate(results_path, list(targets), baseline, max_regression, alpha, max_cold_regression,
                       gate_cold_start)
    if as_json:
        out = {"verdict": results["verdict"], "checks": results["checks"], "incomplete": results["incomplete"]}
        if "regression" in results:
            out["regression"] = results["regression"]
        click.echo(json.dumps(out, indent=2))
    else:
        console = UI().out
        for line in results["incomplete"]:
            console.print(f"INCONCLUSIVE: {line}", markup=False)
        if "regression" in results:
            console.print(f"against baseline {baseline} (regression: median run slower by > max({max_regression:g} %, "
                          f"base run spread) warm, > max({max_cold_regression:g} %, spread) cold start, "
                          f"and p < {alpha:g} over runs):", markup=False)
            for c in results["checks"]:
                if c["budget"].startswith("regression_"):
                    console.print(f"  {c['outcome']} {c['artifact']} {c['budget']}: {c['detail']}", markup=False)
            for line in notes(results["regression"]):
                console.print(f"  {line}", markup=False)
        print_checks(results, console)
    sys.exit(EXIT_CODES[results["verdict"]])


@cli.command()
@click.argument("base_path", metavar="BASE", type=click.Path(path_type=Path))
@click.argument("head_path", metavar="HEAD", type=click.Path(path_type=Path))
@_regression_options
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when a regression is found.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@_handle_errors
def compare(base_path: Path, head_path: Path, max_regression: float, alpha: float, max_cold_regression: float,
            fail_on_regression: bool, as_json: bool):
    """Compare two results files: per artifact (teacher included), the median warm latency and
    cold start of each, the change in percent, a bootstrap 95 % interval of the ratio, the
    two-sided Mann-Whitney U p-value, and slower / faster / same.

    It reports and does not gate: the exit code is 0 unless --fail-on-regression is given
    (then 1 on a regression). To gate, use `edgedistill gate HEAD --baseline BASE`.

    \b
    Example:
      edgedistill compare runs/main/results.json runs/default/results.json
    """
    from edgedistill import api
    from edgedistill.errors import EXIT_BUDGET_FAILED, EXIT_PASS
    from edgedistill.report.table import print_comparison
    from edgedistill.ui import UI

    comparison = api.compare(base_path, head_path, max_regression, alpha, max_cold_regression)
    if as_json:
        click.echo(json.dumps(comparison.to_json(), indent=2))
    else:
        print_comparison(comparison, UI().out)
    sys.exit(EXIT_BUDGET_FAILED if fail_on_regression and comparison.regressions else EXIT_PASS)


@cli.command()
@click.argument("results_path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html", "junit"]), default="md", show_default=True,
              help="md: Markdown; csv: one row per artifact; html: one self-contained page with plots; "
                   "junit: JUnit XML, one test per budget check.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write here instead of stdout.")
@_handle_errors
def report(results_path: Path, fmt: str, output: Path | None):
    """Render a report from a results file alone.

    \b
    Examples:
      edgedistill report runs/default/results.json --format md -o report.md
      edgedistill report runs/default/results.json --format html -o report.html
      edgedistill report runs/default/results.json --format junit -o junit.xml
    """
    from edgedistill.artifacts import atomic_write_text
    from edgedistill.report import csv as csv_report
    from edgedistill.report import html, junit, markdown
    from edgedistill.report.results import load_results

    from edgedistill.errors import EXIT_INCONCLUSIVE, UsageError
    from edgedistill.report.results import incomplete_reason

    if output is not None and output.is_dir():
        suffix = {"junit": "xml"}.get(fmt, fmt)
        raise UsageError(f"--output {output} is a directory, expected a file path",
                         f"name a file inside it, e.g. -o {output / f'report.{suffix}'}")
    results = load_results(results_path)
    render = {"md": markdown.render, "csv": csv_report.render, "html": html.render, "junit": junit.render}[fmt]
    text = render(results)
    if output:
        try:
            atomic_write_text(output, text)
        except OSError as e:
            raise UsageError(f"cannot write --output {output}: {e.strerror or e}") from None
    else:
        click.echo(text, nl=not text.endswith("\n"))
    # The report says so too; the exit code keeps CI from reading an interrupted run as a success.
    if reason := incomplete_reason(results):
        click.echo(f"INCONCLUSIVE: {results_path}: {reason}", err=True)
        sys.exit(EXIT_INCONCLUSIVE)


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


@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def targets():
    """Target profiles: the shipped ones, checking a file, and reaching a target's device.

    \b
    Examples:
      edgedistill targets list
      edgedistill targets show jetson-orin-nano
      edgedistill targets validate my-board.toml
      edgedistill targets probe raspberry-pi-5
    """


def _without_nulls(value):
    """TOML has no null: an unset key is left out (targets show says so)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


@targets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@_handle_errors
def targets_list(as_json: bool):
    """List the profiles shipped in targets/: name, runner, device, backends, description.

    \b
    Example:
      edgedistill targets list --json
    """
    from edgedistill import api

    rows = api.list_targets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows) if rows else 4
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<{width}}  (does not load: {_one_line(r['error'])})")
            continue
        click.echo(f"{r['name']:<{width}}  {r['runner']:<5}  {r['device']:<5}  {', '.join(r['backends'])}")
        if r["description"]:
            click.echo(f"{'':<{width}}  {_one_line(r['description'])}")


@targets.command("show")
@click.argument("target", metavar="NAME|FILE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of TOML.")
@_handle_errors
def targets_show(target: Path, as_json: bool):
    """Print a profile as edgedistill reads it: every default filled in, and the file it came from.

    \b
    Examples:
      edgedistill targets show local-cpu
      edgedistill targets show ci/my-board.toml --json
    """
    from edgedistill import api

    shown = api.show_target(target)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    import tomli_w

    origin = "shipped profile" if shown["shipped"] else "file"
    click.echo(f"# {shown['target']['name']}: from {shown['source']} ({origin}); defaults filled in, "
               "unset keys left out")
    click.echo(tomli_w.dumps(_without_nulls(shown["target"])), nl=False)


@targets.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one result per file as JSON.")
@_handle_errors
def targets_validate(files: tuple[Path, ...], as_json: bool):
    """Check target files: exit 0 when every one loads, 2 with each error when not.

    \b
    Example:
      edgedistill targets validate targets/*.toml ci/my-board.toml
    """
    from edgedistill import api

    rows = api.validate_targets(list(files))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r["ok"]:
                click.echo(f"ok: {_one_line(r['file'])} ({r['name']}, runner {r['runner']})")
            else:
                click.echo(f"error: {_one_line(r['error'])}", err=True)
                if r["hint"]:
                    click.echo(f"  hint: {_one_line(r['hint'])}", err=True)
    if not all(r["ok"] for r in rows):
        sys.exit(EXIT_USAGE)


def _mhz_range(cpu: dict) -> str:
    lo, hi = cpu.get("min_mhz"), cpu.get("max_mhz")
    return f", {lo}-{hi} MHz" if lo is not None and hi is not None else ", frequencies not exposed"


def _probe_lines(probed: dict) -> list[str]:
    """The device's description, a fact per line ('not exposed' where the device has none)."""
    d = probed["device"]
    cpu, py = d.get("cpu") or {}, d.get("python") or {}
    lines = [f"target    {probed['target']} (runner {probed['runner']}: {probed['reached']})",
             f"board     {d.get('board') or 'not exposed'}; {d.get('platform') or '?'}",
             f"cpu       {cpu.get('model') or '?'}, {cpu.get('logical_cores')} cores "
             f"({cpu.get('usable_cores')} usable){_mhz_range(cpu)}",
             f"python    {py.get('version', '?')} ({py.get('executable', '?')})"]
    runtimes = d.get("runtimes") or {}
    lines.append("runtimes  " + (", ".join(
        f"{name} {r['version'] or '(version unknown)'}" if r.get("installed") else f"{name} not installed"
        for name, r in runtimes.items()) or "not reported"))
    lines.append(f"governor  {d.get('governor') or 'not exposed'}")
    thermal = d.get("thermal")
    lines.append("thermal   " + (", ".join(f"{z['zone']} {z['celsius']:.1f} C" for z in thermal)
                                 if thermal else "not exposed"))
    j = d.get("jetson")
    if j:
        locked = {True: "locked", False: "NOT locked", None: "unknown"}[j.get("clocks_locked")]
        lines.append(f"jetson    L4T {j.get('l4t') or '?'}, nvpmodel {j.get('nvpmodel') or 'unknown'}"
                     f"{'' if j.get('nvpmodel_id') is None else ' (' + str(j['nvpmodel_id']) + ')'}, "
                     f"clocks {locked}" + (f" ({j['clocks_source']})" if j.get("clocks_source") else ""))
    return lines


@targets.command("probe")
@click.argument("target", metavar="NAME|FILE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the device's description as JSON.")
@_handle_errors
def targets_probe(target: Path, as_json: bool):
    """Reach a target's device through its runner and describe it: CPU, cores and frequencies,
    Python, the runtimes installed, governor, thermal state; on a Jetson nvpmodel and clocks.
    An unreachable device: exit 5.

    \b
    Examples:
      edgedistill targets probe local-cpu
      edgedistill targets probe jetson-orin-nano --json
    """
    from edgedistill import api

    note = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    probed = api.probe_target(target, note)
    if as_json:
        click.echo(json.dumps(probed, indent=2))
    else:
        for line in _probe_lines(probed):
            click.echo(_one_line(line))


def main() -> None:
    from edgedistill.interrupts import Interrupted, handle_signals

    try:
        # SIGINT, SIGTERM and SIGHUP unwind the command (see interrupts.py): its probes are
        # killed and its temporary folders removed on the way out, then one line and 128 + N.
        with handle_signals():
            cli.main(standalone_mode=False, prog_name="edgedistill")
    except Interrupted as e:
        from edgedistill.bench.runners.local import kill_live_groups

        kill_live_groups()  # normally already done by run_probe's finally
        click.echo(e.message(), err=True)
        sys.exit(e.exit_code)
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
