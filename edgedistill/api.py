"""The library behind every CLI verb: distill, export, bench, gate, report, compress, doctor.

Each stage reads and writes files in the run folder (runs/<name>/) and is skipped when its
inputs and settings have not changed, so a second `compress` in CI only re-measures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill.artifacts import Artifact, atomic_write_text, sha256_file
from edgedistill.backends.base import BACKENDS, get_backend, not_runnable, package_version
from edgedistill.config import Config, TargetConfig, cache_dir, checked_run_dir, load_target
from edgedistill.errors import BackendUnavailableError, InconclusiveError, UsageError, VerificationError
from edgedistill.regression import ALPHA, MAX_COLD_REGRESSION_PCT, MAX_REGRESSION_PCT
from edgedistill.stages import Stage, stage_key
from edgedistill.trust import trusted_hashes
from edgedistill.ui import UI

if TYPE_CHECKING:
    from edgedistill.data import DataSplits
    from edgedistill.distill.world import World


@dataclass
class Workspace:
    """Everything loaded once per command: config, targets, data, models."""

    cfg: Config
    run_dir: Path
    targets: list[TargetConfig]
    # sha256 of files trusted to run code when loaded (--trust-sha256), for every role; each
    # role also trusts its own config trust_sha256 (see trusted_for).
    trusted: frozenset[str] = frozenset()

    def trusted_for(self, role: str) -> frozenset[str]:
        return self.trusted | trusted_hashes([getattr(self.cfg, role).trust_sha256])


def open_workspace(cfg: Config, targets: list[Path] | None = None,
                   trust_sha256: Iterable[str] = ()) -> Workspace:
    """Validate everything that can be validated before a model is loaded (config errors: exit 2)."""
    trusted = trusted_hashes(trust_sha256)
    for name in dict.fromkeys(cfg.export.backends):
        get_backend(name)
    for role, weights in (("teacher", cfg.teacher.weights), ("student", cfg.student.weights)):
        if weights is not None and not Path(weights).is_file():
            raise UsageError(f"{role} weights file not found: {weights}", f"check [{role}] weights or --{role}-weights")
    loaded = [load_target(p) for p in (targets or cfg.bench.targets)]
    for t in loaded:
        for name in t.backends:
            get_backend(name)
    _check_quality_spec(cfg)
    return Workspace(cfg, checked_run_dir(cfg.run), loaded, trusted)  # a run never writes outside out_dir


def _check_quality_spec(cfg: Config) -> None:
    """The quality metric fits the task, and a user metric imports (exit 2, before any model is
    loaded); distill() then calls it once on the teacher's outputs, before training."""
    from edgedistill.errors import ConfigError
    from edgedistill.quality import is_user_metric, load_user_metric

    if cfg.quality in ("top1", "agreement") and cfg.distill.objective == "embedding":
        raise ConfigError(f'quality = "{cfg.quality}" scores class scores, but distill.objective = "embedding" '
                          "outputs vectors", 'use "auto" (cosine), "cosine", "recall@10" or "pkg.mod:fn"')
    if is_user_metric(cfg.quality) and cfg.quality != "auto":
        load_user_metric(cfg.quality)


def _check_user_metric(cfg: Config, teacher, splits) -> None:
    """A user quality metric that raises or returns a non-number stops the run here, before any
    training: it is called once on the teacher's outputs for a few validation samples."""
    from edgedistill.data.inputs import take
    from edgedistill.distill.teacher_cache import predict
    from edgedistill.quality import CHECK_SAMPLES, check_user_metric, is_user_metric

    if cfg.quality == "auto" or not is_user_metric(cfg.quality):
        return
    outputs = predict(teacher, take(splits.x_val, slice(0, CHECK_SAMPLES))).numpy()
    labels = None if splits.y_val is None else splits.y_val[:CHECK_SAMPLES].numpy()
    check_user_metric(cfg.quality, outputs, labels)


def _file_id(path: Path | None) -> str | None:
    return None if path is None else sha256_file(Path(path))


def teacher_weights_files(spec: str, weights: Path | None, teacher: object = None) -> list[dict]:
    """Every file that holds the teacher's weights, each with its sha256, main file first.

    A reader of the results can then check that the teacher was the one meant: a teacher whose
    bytes were damaged may score well above chance (46 % where 99 % was expected) and pass the
    weak-teacher check. An entrypoint without a weights file gives [] (its own initialisation).
    """
    if weights is not None:
        paths = [Path(weights)]
    elif hasattr(teacher, "external_files"):  # an OnnxTeacher: its locations were checked at load
        paths = [teacher.path, *(teacher.path.parent / loc for loc in teacher.external_files)]
    elif spec.lower().endswith(".pt2"):
        paths = [Path(spec)]
    elif spec.startswith("hf:"):
        paths = sorted(Path(spec.removeprefix("hf:")).glob("*.safetensors"))
    else:
        paths = []
    return [{"path": str(p), "sha256": sha256_file(p)} for p in paths]


def describe_teacher_weights(files: list[dict]) -> str:
    """One line for the terminal: each weights file and its sha256."""
    from edgedistill.report.markdown import NO_WEIGHTS_FILE

    if not files:
        return NO_WEIGHTS_FILE
    return ", ".join(f"{f['path']} sha256 {f['sha256']}" for f in files)


# ---------------------------------------------------------------- distill


@dataclass
class Distilled:
    splits: object  # DataSplits
    teacher: object  # nn.Module
    student: object  # nn.Module, distilled weights loaded
    key: str
    metrics: dict
    form: str | None = None  # a pruned student's form ("prune0.5"); None: the distilled student as is


def distill(ws: Workspace, ui: UI, world: World | None = None, splits: DataSplits | None = None) -> Distilled:
    """Distill the student, or reuse the run's unchanged result.

    In a data-parallel run (`world`, from launch.py) every rank calls this: rank 0 decides
    whether the stage is reused and is the only one to write; the metrics are rank 0's.
    """
    import torch
    from safetensors.torch import load_file

    from edgedistill.data import load_data
    from edgedistill.data.inputs import check_names
    from edgedistill.distill.defaults import resolve as resolve_defaults
    from edgedistill.distill.objectives import NO_LABELS_NOTE, check_models, check_teacher_score, describe_score
    from edgedistill.distill.teacher_cache import model_digest
    from edgedistill.distill.teachers import check_sequence_length
    from edgedistill.distill.trainer import BOOKKEEPING_SETTINGS
    from edgedistill.distill.trainer import distill as train
    from edgedistill.distill.world import SINGLE
    from edgedistill.specs import load_model, load_student

    cfg, world = ws.cfg, world or SINGLE
    ui.step(f"data: {cfg.data.spec}")
    if splits is None:  # else the caller has loaded them already (suggest_labels)
        splits = load_data(cfg.data, seed=cfg.run.seed)
    teacher = load_model(cfg.teacher.spec, cfg.teacher.weights, role="teacher",
                         trusted=ws.trusted_for("teacher"), pipeline_dir=cfg.run.out_dir)
    check_sequence_length(teacher, splits.x_train)  # past the position table: one line, before any forward
    torch.manual_seed(cfg.run.seed)  # the student's initial weights are part of the run's inputs
    check_names(teacher, "teacher", splits.sample)  # before a derived student copies the teacher
    student = load_student(cfg.student.spec, cfg.student.weights, teacher=teacher,
                           input_shape=splits.sample, note=ui.note, trusted=ws.trusted_for("student"),
                           pipeline_dir=cfg.run.out_dir)
    check_names(student, "student", splits.sample)
    if cfg.compress.prune is not None:  # a misspelt layer fails here, not after the training
        from edgedistill.compress.prune import check_layers

        check_layers(student, cfg.compress.prune.layers)
    if getattr(teacher, "load_note", ""):
        ui.note(teacher.load_note)  # an hf: model: what it outputs (logits, or a pooled embedding) and how
    check_models(cfg.distill.objective, teacher, student, splits)
    _check_user_metric(cfg, teacher, splits)
    # lr / batch_size the config leaves out, by what the student is; before the stage key.
    dc, why = resolve_defaults(cfg.distill, student)
    if why:
        ui.note(why)
    weights_files = teacher_weights_files(cfg.teacher.spec, cfg.teacher.weights, teacher)
    ui.note(f"teacher weights: {describe_teacher_weights(weights_files)}")
    key = stage_key(
        # The weights file was just hashed for the record: the same digest _file_id would compute.
        teacher=(cfg.teacher.spec, weights_files[0]["sha256"] if cfg.teacher.weights else None,
                 model_digest(teacher)),
        student=(cfg.student.spec, _file_id(cfg.student.weights)),
        data=splits.fingerprint, seed=cfg.run.seed,
        distill=dc.model_dump(exclude=BOOKKEEPING_SETTINGS),
        torch=package_version("torch"),
    )
    stage = Stage(ws.run_dir, "distill", key)
    weights = stage.dir / "student.safetensors"
    # Rank 0's view of the stage: other nodes may not share its disk.
    manifest = None if cfg.distill.restart else world.broadcast(stage.cached() if world.main else None)
    if world.main and stage.changed:
        ui.step(f"distill: redoing it: {stage.changed}")
    if manifest is not None:
        ui.step(f"distill: unchanged, reusing {weights}")
        metrics = {**manifest["metrics"], **_teacher_record(weights_files)}
        if metrics.get("teacher_val_acc") is not None:
            # The stage may have been made with allow_weak_teacher = true: the recorded score
            # is held to today's setting, so a cached stage never lets a chance teacher through.
            check_teacher_score(metrics["teacher_val_acc"], splits.num_classes, len(splits.y_val),
                                allow=cfg.teacher.allow_weak_teacher)
            ui.note(f"teacher: validation top-1 {metrics['teacher_val_acc']:.2%} (recorded)")
        elif metrics.get("student_val_agreement") is not None:
            ui.note(NO_LABELS_NOTE)
        if world.main:
            student.load_state_dict(load_file(weights))
        return Distilled(splits, teacher, student.eval(), key, metrics)

    processes = f", {world.size} processes" if world.distributed else ""
    ui.step(f"distill: {dc.epochs} epochs, " + (
        f"embedding MSE x{dc.embedding_mse_weight:g} + cosine x{dc.embedding_cosine_weight:g}"
        if dc.objective == "embedding" else f"T={dc.temperature:g}, alpha={dc.alpha:g}") + processes)
    out = stage.begin() if world.main else stage.dir
    with ui.progress() as progress:
        result = train(teacher, student, splits, dc, out, seed=cfg.run.seed,
                       cache_dir=cache_dir(cfg.run) / "teacher", progress=progress,
                       notify=ui.note, world=world, allow_weak_teacher=cfg.teacher.allow_weak_teacher,
                       on_epoch=None if progress else lambda r: ui.note(
                           f"epoch {r['epoch']}/{cfg.distill.epochs}: loss {r['loss']:.4f}, "
                           f"{describe_score(r)}, {r['samples_per_s']:.0f} samples/s"))
    if dc.objective == "embedding":
        # No classes: the teacher's accuracy means nothing; how close the student's vectors are does.
        metrics = {"objective": "embedding", "student_val_cosine": result.student_val_cosine,
                   "epochs": len(result.history)}
        ui.note(f"validation: student embeddings vs teacher, mean cosine {result.student_val_cosine:.4f}")
    elif result.student_val_agreement is not None:  # no labels: the teacher's predictions are the reference
        metrics = {"objective": "logits", "teacher_val_acc": None, "student_val_agreement": result.student_val_agreement,
                   "val_samples": len(splits.y_val), "epochs": len(result.history)}
        ui.note(f"validation (no labels): student top-1 agreement with the teacher {result.student_val_agreement:.2%}")
    else:
        metrics = {"teacher_val_acc": result.teacher_val_acc, "student_val_acc": result.student_val_acc,
                   "val_samples": len(splits.y_val), "epochs": len(result.history)}
        ui.note(f"validation top-1: teacher {result.teacher_val_acc:.2%}, student {result.student_val_acc:.2%}")
    metrics.update(_teacher_record(weights_files))
    if world.main:
        stage.commit([result.weights_path], metrics=metrics)
    return Distilled(splits, teacher, result.student.eval(), key, metrics)


def prune_student(ws: Workspace, ui: UI, d: Distilled, pc) -> Distilled:
    """Prune the distilled student ([compress.prune] or a search candidate), then fine-tune it
    from the teacher to recover; or reuse the unchanged stage (prune<ratio>/ in the run folder).
    The metrics give params, MACs and the validation score before pruning, right after it and
    after the recovery."""
    import json

    from safetensors.torch import load_file

    from edgedistill.compress import prune as pruning
    from edgedistill.data.inputs import example as first_sample
    from edgedistill.distill.defaults import resolve as resolve_defaults
    from edgedistill.distill.objectives import Validator
    from edgedistill.distill.trainer import BOOKKEEPING_SETTINGS
    from edgedistill.distill.trainer import distill as train

    cfg = ws.cfg
    form = pruning.form_name(pc.ratio, pc.layers)
    example = first_sample(d.splits.x_train)
    # The recovery is a distillation like the first, shorter, with the same settings.
    dc = resolve_defaults(cfg.distill.model_copy(update={"epochs": max(pc.recovery_epochs, 1)}), d.student)[0]
    key = stage_key(distilled=d.key, prune=pc.model_dump(), recovery=dc.model_dump(exclude=BOOKKEEPING_SETTINGS))
    stage = Stage(ws.run_dir, form, key)
    weights, plan_file = stage.dir / "student.safetensors", stage.dir / "pruning-plan.json"
    if (manifest := stage.cached()) is not None:
        ui.step(f"prune: unchanged, reusing {weights}")
        student = pruning.replay(d.student, example, json.loads(plan_file.read_text(encoding="utf-8")))
        student.load_state_dict(load_file(weights))
        return Distilled(d.splits, d.teacher, student.eval(), key, manifest["metrics"], form)

    out = stage.begin()
    validator = Validator(cfg.distill.objective, d.teacher, d.splits)
    loss = pruning.taylor_loss(d.teacher, d.splits, cfg.distill) if pc.importance == "taylor" else None
    what = [f"ratio {pc.ratio:g}"] * (pc.ratio is not None) + [f"{len(pc.layers)} named layers"] * bool(pc.layers)
    ui.step(f"prune: {', '.join(what)}, {pc.importance} importance, then {pc.recovery_epochs} recovery epochs")
    p = pruning.prune(d.student, example, ratio=pc.ratio, layers=pc.layers, importance=pc.importance, loss=loss)
    before, after_prune = validator(d.student), validator(p.model)
    student = p.model
    if pc.recovery_epochs:
        with ui.progress() as progress:
            result = train(d.teacher, student, d.splits, dc, out, seed=cfg.run.seed,
                           cache_dir=cache_dir(cfg.run) / "teacher", progress=progress, notify=ui.note,
                           allow_weak_teacher=cfg.teacher.allow_weak_teacher,
                           on_epoch=None if progress else lambda r: ui.note(
                               f"recovery epoch {r['epoch']}/{dc.epochs}: {validator.describe(r[validator.name])}"))
        student = result.student
    else:
        from safetensors.torch import save

        from edgedistill.artifacts import atomic_write_bytes

        atomic_write_bytes(weights, save({k: v.contiguous() for k, v in student.state_dict().items()}))
    atomic_write_text(plan_file, json.dumps(p.plan))
    metrics = {"form": form, "ratio": pc.ratio, "layers": pc.layers, "importance": pc.importance,
               "recovery_epochs": pc.recovery_epochs, "score": validator.name,
               "params_before": p.params_before, "params_after": p.params_after,
               "macs_before": p.macs_before, "macs_after": p.macs_after,
               "val_before": before, "val_pruned": after_prune, "val_after": validator(student)}
    ui.note(f"pruned {form}: {pruning.describe(p)}; {validator.name} {before:.2%} -> {after_prune:.2%} "
            f"pruned -> {metrics['val_after']:.2%} recovered")
    stage.commit([weights, plan_file], metrics=metrics)
    return Distilled(d.splits, d.teacher, student.eval(), key, metrics, form)


def suggest_labels(ws: Workspace, ui: UI, output: Path, top: int | None = None,
                   top_percent: float | None = None) -> dict:
    """Rank the run's unlabelled training samples by how informative a label would be (active.py)
    and write the top ones to `output` (CSV). Reuses the distill stage when nothing changed."""
    import torch

    from edgedistill import active
    from edgedistill.data import load_data
    from edgedistill.data.inputs import count, take
    from edgedistill.distill.teacher_cache import predict, teacher_logits

    cfg, output = ws.cfg, Path(output)
    if output.is_dir():
        raise UsageError(f"--output {output}: expected a CSV file to write, found a directory")
    # Checked before any training: a run without unlabelled samples has nothing to suggest.
    splits = load_data(cfg.data, seed=cfg.run.seed)
    positions = active.unlabelled_positions(splits.y_train, count(splits.x_train))
    if not positions.size:
        raise UsageError(
            f"{splits.name}: no unlabelled training samples to rank; every one of its "
            f"{count(splits.x_train)} training samples has a label",
            "mark samples without a label as -1 in y (or leave y out), or set data.label_fraction below 1",
        )
    n = active.how_many(len(positions), top, top_percent)
    d = distill(ws, ui, splits=splits)
    index = torch.from_numpy(positions.astype(np.int64))
    teacher_out = teacher_logits(d.teacher, d.splits, cache_dir(cfg.run) / "teacher")[index]
    student_out = predict(d.student, take(d.splits.x_train, index))
    scores = active.score_samples(teacher_out, student_out, d.splits.train_index[positions], cfg.distill.objective)
    try:
        active.write_csv(output, scores, n)
    except OSError as e:  # nothing half-written: the temporary file is removed
        raise UsageError(f"could not write {output}: {e.strerror or e}") from e
    ui.note(active.COMBINED[cfg.distill.objective])
    return {"output": str(output), "unlabelled": len(positions), "written": n,
            "objective": cfg.distill.objective, "score": active.COMBINED[cfg.distill.objective]}


def _teacher_record(files: list[dict]) -> dict:
    """The teacher's weights in the distill metrics (and so in results["reference"])."""
    return {"teacher_weights_sha256": files[0]["sha256"] if files else None, "teacher_weights_files": files}


# ---------------------------------------------------------------- export


def _eval_files(ws: Workspace, d: Distilled) -> dict[str, Path]:
    """Held-out inputs, labels and reference outputs: written by the export stage, read by
    verification and by every later bench. Named inputs go in one .npz, one array per name, in
    the student's forward order (a .pte takes its unnamed inputs in that order)."""
    import io

    from edgedistill.artifacts import atomic_write_bytes
    from edgedistill.data.inputs import in_forward_order
    from edgedistill.distill.trainer import predict

    folder = ws.run_dir / "data"
    x = d.splits.x_test
    named = isinstance(x, dict)
    files = {
        "inputs": folder / ("test_inputs.npz" if named else "test_inputs.npy"),
        "labels": folder / "test_labels.npy",
        "teacher_logits": folder / "teacher_test_logits.npy",
        "student_logits": folder / f"{'student' if d.form is None else 'student-' + d.form}_test_logits.npy",
    }
    (folder / ("test_inputs.npy" if named else "test_inputs.npz")).unlink(missing_ok=True)  # another run's
    arrays = {
        "inputs": {k: v.numpy() for k, v in in_forward_order(d.student, x).items()} if named else x.numpy(),
        "labels": d.splits.y_test.numpy(),
        "teacher_logits": predict(d.teacher, x).numpy(),
        "student_logits": predict(d.student, x).numpy(),
    }
    for name, path in files.items():
        buf = io.BytesIO()
        if isinstance(arrays[name], dict):
            np.savez(buf, **arrays[name])
        else:
            np.save(buf, arrays[name])
        atomic_write_bytes(path, buf.getvalue())
    return files


def unavailable_backends(names: list[str]) -> dict[str, str]:
    """Backends that cannot run here, with the reason (and the fix)."""
    out = {}
    for name in dict.fromkeys(names):
        avail = get_backend(name).availability()
        if not avail.ok:
            extra = BACKENDS[name][1]
            out[name] = avail.reason + (f"; extra: edgedistill[{extra}]" if extra else "")
    return out


def check_backends_asked(cfg: Config) -> dict[str, str]:
    """The export backends that cannot run here, with the reason; refused (exit 2, before any
    training) when the user asked for one, in the config or by --backend: skipping it would let
    the gate pass without it ever being measured. Missing backends of the default list are
    skipped, and so is TensorRT, whose engines an SSH device builds itself."""
    missing = unavailable_backends(cfg.export.backends)
    asked = [b for b in missing if b != "tensorrt"] if "backends" in cfg.export.model_fields_set else []
    if asked:
        raise BackendUnavailableError(f"[export] backends lists {asked[0]}, which cannot run here: {missing[asked[0]]}",
                                      "install it (see `edgedistill doctor`), or leave it out of [export] backends / --backend")
    return missing


def _plan(cfg: Config, missing: dict[str, str], teacher: bool = True) -> list[tuple[str, str, str]]:
    """(role, precision, backend) for every artifact to build here, in a stable order."""
    plan = []
    for backend in dict.fromkeys(cfg.export.backends):
        if backend in missing:
            continue
        supported = get_backend(backend).PRECISIONS
        plan += [("student", p, backend) for p in cfg.compress.precisions if p in supported]
        if cfg.export.benchmark_teacher and teacher:
            plan.append(("teacher", "fp32", backend))
    return plan


def ort_platforms(targets: list[TargetConfig]) -> list[str]:
    """The platforms to build an .ort for: each target that benches ort-mobile needs its own
    (backends/ort_mobile.target_platform); with none, this machine's."""
    from edgedistill.backends import ort_mobile

    wanted = {ort_mobile.target_platform(t) for t in targets if "ort-mobile" in t.backends}
    return sorted(wanted) or [ort_mobile.target_platform(TargetConfig(name="local"))]


def for_target(artifact: Artifact, target: TargetConfig) -> bool:
    """Whether `target` benches `artifact`: a backend it lists, and for an .ort the one built for
    its platform (an arm .ort is a phone's artifact, not this machine's, and the other way round)."""
    if artifact.backend not in target.backends:
        return False
    if artifact.backend == "ort-mobile":
        from edgedistill.backends.ort_mobile import target_platform

        return artifact.variant == target_platform(target)
    return True


def unrunnable_verification(reason: str) -> dict:
    """The verification record of an artifact no runtime here can run (Core ML on Linux): not a
    failed check, so allow_unverified is not needed, but never verified."""
    return {"verified": False, "runnable": False, "reason": reason, "problems": [reason]}


def _build_files(artifact: Artifact) -> list[Path]:
    """Files an export keeps beside an artifact that are not run (an .ort's required-operators
    config): hashed with the stage, so losing one redoes it."""
    config = artifact.meta.get("required_operators_config")
    return [Path(config)] if config else []


def artifact_outputs(artifact: Artifact, inputs: Path, work: Path, doing: str) -> tuple[np.ndarray, str]:
    """The artifact's outputs on the inputs file, from its runtime in a fresh process, and the
    runner's kind. A .pte runs on the native runner, the C++ runtime a device runs (and seconds
    sooner: ExecuTorch's Python runtime imports torch); on the Python runtime where it cannot be built."""
    from edgedistill.bench import native
    from edgedistill.bench.runners.local import run_probe

    outputs = work / f"{artifact.name}.outputs.npy"
    req = {"backend": artifact.backend, "model": str(Path(artifact.path).resolve()),
           "precision": artifact.precision, "threads": 1,
           "device": "CPU", "inputs": str(inputs), "mode": "outputs", "outputs_path": str(outputs)}
    command, runner = native.probe_command(artifact.backend, "native")
    outcome = run_probe(req, threads=1, timeout_s=600, command=command)
    if outcome.status in ("crashed", "timeout"):
        # The runtime died (SIGSEGV) or hung: that says nothing certain about the file, so it is
        # not a usage error; but an unchecked artifact must not stay where a reused stage or a
        # bench could take it for a checked one. The stage is not committed: the next run redoes it.
        for f in artifact.files():
            f.unlink(missing_ok=True)
        outputs.unlink(missing_ok=True)
        raise InconclusiveError(f"{artifact.name}: the runtime {outcome.status} while {doing} "
                                f"({outcome.detail}); the file was removed",
                                "run again; if it crashes every time, the runtime cannot run this model here")
    if outcome.status != "ok":
        raise VerificationError(f"{artifact.name}: could not run the exported model while {doing} ({outcome.detail})")
    got = np.load(outputs)
    outputs.unlink()
    return got, runner["kind"]


def _verify(artifact: Artifact, inputs: Path, reference: np.ndarray, cfg: Config, work: Path,
            embedding: bool = False, task=None) -> dict:
    """Run the artifact in a fresh process on the held-out inputs and compare with PyTorch:
    max-abs and top-1 agreement for logits, max-abs and cosine for embeddings. With `task`
    (quality.Task), the artifact's quality value is in the report too."""
    from edgedistill.quality import cosine_per_vector

    got, runner = artifact_outputs(artifact, inputs, work, "verifying the export")
    diff = np.abs(got - reference)
    report = {"samples": len(got), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
              "runner": runner}
    tol = {"fp32": cfg.export.fp32_max_abs, "fp16": cfg.export.fp16_max_abs}.get(artifact.precision)
    problems = []
    if tol is not None and report["max_abs"] > tol:
        problems.append(f"max abs diff {report['max_abs']:.3g} > {tol:g}")
    if embedding:
        # An embedding has no argmax worth agreeing on; its direction is what consumers compare.
        cosine = cosine_per_vector(got, reference)
        report.update(mean_cosine=float(cosine.mean()), min_cosine=float(cosine.min()))
        min_cos = cfg.export.min_cosine.get(artifact.precision, 1.0)
        if report["mean_cosine"] < min_cos:
            problems.append(f"mean cosine {report['mean_cosine']:.5f} < {min_cos:g}")
    else:
        agreement = float((got.argmax(-1) == reference.argmax(-1)).mean())
        report["top1_agreement"] = agreement
        min_agree = cfg.export.min_top1_agreement.get(artifact.precision, 1.0)
        if agreement < min_agree:
            problems.append(f"top-1 agreement {agreement:.2%} < {min_agree:.0%}")
    if task is not None:
        q = task.measure(got)
        report["quality"] = {"metric": q["metric"], "value": q["value"], "teacher": q["teacher"],
                             **({} if q["measured"] else {"reason": q["reason"]})}
    report["verified"] = not problems
    if problems and cfg.export.allow_unverified:
        report["problems"] = problems
    elif problems:
        raise VerificationError(
            f"{artifact.name} differs from PyTorch on {len(got)} held-out inputs: {'; '.join(problems)}",
            "check the exporter's warnings; loosen [export] tolerances only if the drop is acceptable, "
            "or set [export] allow_unverified = true to measure it marked unverified",
        )
    return report


def export_key(cfg: Config, distill_key: str, plan: list[tuple[str, str, str]], platforms: list[str]) -> str:
    """The export stage's key: what was distilled, the export and compress settings, the backends'
    versions, the run's quality metric, and the platforms the .ort files are built for."""
    # A backend named otherwise than its package (ort-mobile, coreml) gives its runtime's version.
    versions = {BACKENDS[b][0]: package_version(b) or get_backend(b).availability().version for _, _, b in plan}
    # Verification records each artifact's quality by the run's metric: another metric redoes
    # it (the default "auto" leaves the key as it was before quality metrics existed).
    extra: dict = {} if cfg.quality == "auto" else {"quality": cfg.quality}
    if platforms:  # one .ort per platform: a target that changes platform redoes the export
        extra["ort_platforms"] = platforms
    # Pruning is in the pruned student's key (distill_key is prune_student's then), not here:
    # the unpruned student's export stays reusable when pruning is turned on.
    return stage_key(distill=distill_key, export=cfg.export.model_dump(),
                     compress=cfg.compress.model_dump(exclude={"prune"}), versions=versions, **extra)


def export(ws: Workspace, ui: UI, d: Distilled | None = None) -> list[Artifact]:
    import torch

    from edgedistill.data import calibration_subset
    from edgedistill.data.inputs import example as first_sample
    from edgedistill.data.inputs import in_forward_order
    from edgedistill.distill.teachers import OnnxTeacher
    from edgedistill.exporters import export_onnx, export_program

    cfg = ws.cfg
    missing = check_backends_asked(cfg)  # before training: a refusal should not cost minutes
    d = d or distill(ws, ui)
    ui.quiet_library_logs()
    for name, reason in missing.items():
        ui.step(f"export: skipping {name}: {reason}")
    # A pruned student's artifacts are a stage of their own (export-prune0.5), without the teacher:
    # the distilled student's and the teacher's are the "export" stage, shared by every form.
    plan = _plan(cfg, missing, teacher=d.form is None)
    platforms = ort_platforms(ws.targets) if any(b == "ort-mobile" for _, _, b in plan) else []
    key = export_key(cfg, d.key, plan, platforms)
    stage = Stage(ws.run_dir, "export" if d.form is None else f"export-{d.form}", key)
    if (manifest := stage.cached()) is not None:
        ui.step("export: unchanged, reusing the verified artifacts")
        return [Artifact.from_json(a) for a in manifest["artifacts"]]
    if stage.changed:
        ui.step(f"export: redoing it, the verified artifacts are not what was verified: {stage.changed}")

    out = stage.begin()
    eval_files = _eval_files(ws, d)
    scoring = quality_task(cfg, eval_files)
    example = first_sample(d.splits.x_test)
    calibration = calibration_subset(d.splits, cfg.compress.calibration_samples, seed=cfg.run.seed)
    models = {"student": d.student, "teacher": d.teacher}
    accuracy = int8_accuracy_check(cfg, d, plan)
    qat = _qat_fallback(ws, ui, d, out, example, accuracy)
    intermediates: dict[tuple[str, str], Artifact] = {}
    artifacts: list[Artifact] = []
    with ui.progress() as progress:
        jobs = [(role, precision, backend_name, variant) for role, precision, backend_name in plan
                for variant in (platforms if backend_name == "ort-mobile" else [None])]
        task = progress.add_task("export + verify", total=len(jobs)) if progress else None
        for role, precision, backend_name, variant in jobs:
            backend = get_backend(backend_name)
            kind = backend.ACCEPTS[0]
            black_box = isinstance(models[role], OnnxTeacher)  # an ONNX file is its own export
            if black_box and kind != "onnx":
                ui.step(f"export: skipping {role} for {backend_name}: an ONNX teacher has no torch.export program")
                if progress:
                    progress.advance(task)
                continue
            if (role, kind) not in intermediates:
                path = out / "intermediate" / f"{role}.{'onnx' if kind == 'onnx' else 'pt2'}"
                ui.step(f"export: {role} -> {kind}")
                if black_box:
                    intermediates[(role, kind)] = models[role].copy_to(path)
                else:
                    with torch.no_grad():
                        fn = export_onnx if kind == "onnx" else export_program
                        intermediates[(role, kind)] = fn(models[role], example, path, role=role,
                                                         dynamic_batch=kind == "onnx")
            ui.step(f"export: {role} {precision} -> {backend_name}{f' ({variant})' if variant else ''}")
            feeds = (in_forward_order(models[role], calibration) if isinstance(calibration, dict)
                     else calibration)  # a program takes its inputs by position, in this order
            checked = precision == "int8" and role == "student" and accuracy is not None
            art = backend.export(intermediates[(role, kind)], out / backend_name, precision=precision,
                                 calibration=feeds if precision == "int8" else None,
                                 **({"target_platform": variant} if variant else {}),
                                 **({"accuracy": accuracy} if checked else {}))
            art.form = d.form if role == "student" else None
            if (q := art.meta.get("quantization")) is not None:
                from edgedistill.report.markdown import quantization_text

                ui.note(f"{art.name}: int8 {quantization_text(q)}")
            source = intermediates[(role, kind)].meta
            for key in ("inputs", "dynamic_sequence"):  # the names, dtypes and axes it was exported with
                if key in source:
                    art.meta.setdefault(key, source[key])
            if qat is not None and precision == "int8" and role != "teacher":  # missed int8_max_drop_pt?
                art = qat(art, backend, role=role, kind=kind, model=models[role],
                          export_kw={"target_platform": variant} if variant else {})
            ref = qat.reference(art, eval_files[f"{role}_logits"]) if qat else np.load(eval_files[f"{role}_logits"])
            if (reason := not_runnable(backend_name)) is not None:
                art.meta["verification"] = unrunnable_verification(reason)
            else:
                art.meta["verification"] = _verify(art, eval_files["inputs"], ref, cfg, out,
                                                   embedding=cfg.distill.objective == "embedding", task=scoring)
            v = art.meta["verification"]
            if v.get("runnable") is False:
                ui.step(f"export: {art.name} written, not verified: {v['reason']}")
            elif v["verified"]:
                ui.note(f"verified {art.name}: {verification_summary(v)}")
            else:
                ui.step(f"export: UNVERIFIED {art.name} (allow_unverified): {'; '.join(v['problems'])}")
            artifacts.append(art)
            if progress:
                progress.advance(task)
    # The held-out files are listed too: the bench reads them, so losing one re-runs the stage.
    # Intermediates too: a .pt2 the pipeline wrote is then known as its own (specs.recorded_by_pipeline).
    files = [*eval_files.values(), *(f for a in intermediates.values() for f in a.files()),
             *(f for a in artifacts for f in [*a.files(), *_build_files(a)]), *(qat.files() if qat else [])]
    if qat is not None:
        qat.close()
    stage.commit(files, artifacts=[a.to_json() for a in artifacts])
    return artifacts


def int8_accuracy_check(cfg: Config, d: Distilled, plan: list[tuple[str, str, str]]):
    """The INT8 accuracy check on the validation split (compress/accuracy.py), or None: no INT8
    student in the plan, or an embedding student (no top-1 to lose: no fallbacks)."""
    if cfg.distill.objective == "embedding" or not any(r == "student" and p == "int8" for r, p, _ in plan):
        return None
    from edgedistill.compress.accuracy import AccuracyCheck

    return AccuracyCheck.for_student(d.student, d.splits, cfg.compress.int8_max_drop_pt,
                                     fallbacks=cfg.compress.int8_fallbacks)
def _qat_fallback(ws: Workspace, ui: UI, d: Distilled, out: Path, example, accuracy):
    """The "qat" INT8 fallback of this export (compress/qat_fallback.py), or None when it is
    off: not in [compress] int8_fallbacks, or no INT8 accuracy check (int8_accuracy_check)."""
    cfg = ws.cfg
    if "qat" not in cfg.compress.int8_fallbacks or accuracy is None:
        return None
    from edgedistill.compress.qat_fallback import QATFallback

    def train(role: str, model):
        from edgedistill.compress.qat import QUANTIZER, train_qat

        ui.step(f"export: quantization-aware training of the {role}, {cfg.compress.qat_epochs} epochs "
                f"from the teacher ({QUANTIZER})")
        return train_qat(d.teacher, model, d.splits, cfg.distill, d.splits.sample,
                         epochs=cfg.compress.qat_epochs, seed=cfg.run.seed,
                         cache_dir=cache_dir(cfg.run) / "teacher", notify=ui.note, name=cfg.student.spec)

    return QATFallback(accuracy, train, example, out, d.splits.x_test, note=ui.note)


def verification_summary(v: dict) -> str:
    """One line for a verification report, logits (top-1 agreement) or embeddings (cosine),
    and the artifact's quality where recorded."""
    if v.get("runnable") is False:  # exported, but no runtime here can run it (Core ML on Linux)
        return f"not verified: {v['reason']}"
    q = v.get("quality") or {}
    score = f", {q['metric']} {q['value']:.4f}" if q.get("value") is not None else ""
    if "mean_cosine" in v:
        return f"max abs {v['max_abs']:.2e}, mean cosine {v['mean_cosine']:.6f} (min {v['min_cosine']:.6f}){score}"
    return f"max abs {v['max_abs']:.2e}, top-1 agreement {v['top1_agreement']:.2%}{score}"


def quality_task(cfg: Config, eval_files: dict[str, Path]):
    """The run's quality metric with its references: the held-out labels and the PyTorch
    teacher's outputs on the held-out inputs (quality.Task)."""
    from edgedistill.quality import Task

    return Task.for_run(cfg.quality, cfg.distill.objective, np.load(eval_files["labels"]),
                        np.load(eval_files["teacher_logits"]))


# ---------------------------------------------------------------- bench, gate, report


def bench(ws: Workspace, ui: UI, artifacts: list[Artifact] | None = None,
          d: Distilled | None = None, results_path: Path | None = None, reports: bool = True) -> dict:
    """Measure every artifact on every target; write results.json and the reports.

    The results file is replaced before anything is measured and rewritten after each artifact:
    until the last one it says `complete: false` and lists what is still missing, so a bench
    that is interrupted, killed or crashes leaves a file that never passes `gate` (and never an
    earlier run's file beside this run's artifacts)."""
    from edgedistill.bench.environment import environment
    from edgedistill.interrupts import Interrupted
    from edgedistill.report.results import new_results, write_results

    results_path = results_path or ws.run_dir / "results.json"
    results = new_results(ws.cfg.run.name, environment(seed=ws.cfg.run.seed),
                          {"teacher_top1": None, "test_samples": None, "distill": None})
    for stale in ("report.md", "report.html", "junit.xml") if reports else ():  # an earlier run's
        (ws.run_dir / stale).unlink(missing_ok=True)
    write_results(results_path, results)
    try:
        _measure(ws, ui, results, results_path, artifacts, d)
    except Interrupted as e:
        _mark_interrupted(results, results_path, ui, e)
        raise
    _complete(results)
    write_results(results_path, results)
    if reports:
        write_reports(results, results_path.parent, ui)
    return results


class _ResultsFile:
    """A bench's results and their file, shared by the devices measured at once: each result is
    recorded and the file rewritten under one lock, after each artifact, so a crash keeps what
    was measured and the file lists what is still missing."""

    def __init__(self, results: dict, path: Path):
        self.results, self.path, self.lock = results, path, threading.Lock()

    def add(self, record: dict, target_name: str, result: dict) -> None:
        from edgedistill.report.results import write_results

        with self.lock:
            record["results"].append(result)
            self.results["missing"].remove({"target": target_name, "artifact": result["artifact"]})
            write_results(self.path, self.results)


def _mark_interrupted(results: dict, results_path: Path, ui: UI, e) -> None:
    """An interrupted bench's file says so, and so do its Markdown, JUnit and job summary
    (milliseconds); the HTML page's plots take seconds, too long for a signal's grace period:
    `edgedistill report` renders it later."""
    from edgedistill.report.results import write_results

    results["interrupted"] = e.name
    write_results(results_path, results)
    e.notes.append(f"results file marked incomplete ({results_path})")
    write_reports(results, results_path.parent, ui, html_page=False)


def _complete(results: dict) -> None:
    """Every planned artifact was measured: the summary, `complete`, and the verdict."""
    results["summary"] = {"speedups": speedups(results)}
    results["complete"] = True
    apply_gate(results)


def _measure(ws: Workspace, ui: UI, results: dict, results_path: Path, artifacts: list[Artifact] | None,
             d: Distilled | None) -> None:
    """Plan every (target, artifact), then measure them one by one, rewriting the file after each."""
    from edgedistill.bench.fleet import Job, measure_all
    from edgedistill.bench.harness import (
        EvalSet,
        bench_artifact,
        export_only_result,
        skipped_result,
        unreachable_result,
    )
    from edgedistill.quality import labelled
    from edgedistill.report.results import write_results

    if artifacts is None:
        check_backends_asked(ws.cfg)
    d = d or distill(ws, ui)
    if artifacts is None:
        artifacts, d = export_all(ws, ui, d)
    data = ws.run_dir / "data"
    files = {"labels": data / "test_labels.npy", "teacher_logits": data / "teacher_test_logits.npy"}
    task = quality_task(ws.cfg, files)
    # Data without labels (all -1): no top-1 to measure. Scored against -1 every model would get
    # 0 % and an accuracy budget would pass on nothing; not measured, it is INCONCLUSIVE instead.
    labels = labelled(task.labels)
    named = data / "test_inputs.npz"  # a model with several inputs (_eval_files)
    inputs = named if named.is_file() else data / "test_inputs.npy"
    if ws.cfg.distill.objective == "embedding":
        # Vectors have no classes: top-1 and agreement would be argmaxes of embeddings. The
        # quality block (cosine, recall@10) is what an embedding is scored and gated by.
        evalset = EvalSet(inputs, None, None, task, no_accuracy="an embedding model has no classes: see quality")
        teacher_top1 = None
    else:
        teacher_pred = task.teacher_outputs.argmax(-1)
        evalset = EvalSet(inputs, labels, teacher_pred, task)
        teacher_top1 = None if labels is None else float((teacher_pred == labels).mean())
    results["reference"] = {"teacher_top1": teacher_top1,
                            "test_samples": int(task.labels.size), **reference_teacher_fields(d.metrics),
                            "quality": task.reference(), "distill": d.metrics}
    plan = []
    for target in ws.targets:
        record = {"name": target.name, "runner": target.runner, "device": target.device,
                  "threads": target.threads, "budgets": target.budgets.model_dump(),
                  "measurement": target.measurement.model_dump(), "sweep": target.sweep.model_dump(),
                  "allow_fallback": target.allow_fallback, "cold_disk": ws.cfg.bench.cold_disk,
                  "results": []}
        results["targets"].append(record)
        # A backend the target asks for that cannot run here is recorded, never silently dropped.
        # TensorRT on an SSH device needs no TensorRT here: the device builds its own engines.
        on_device = {"tensorrt"} if target.runner == "ssh" else set()
        for name, reason in unavailable_backends([b for b in target.backends if b not in on_device]).items():
            ui.step(f"bench {target.name}: skipping {name}: {reason}")
            record["results"].append(skipped_result(name, target, reason))
        chosen = [a for a in artifacts if for_target(a, target) and a.backend not in on_device]
        if "tensorrt" in on_device and "tensorrt" in target.backends:
            chosen += device_engine_sources(artifacts)
        plan.append((target, record, chosen))
        results["missing"] += [{"target": target.name, "artifact": a.name} for a in chosen]
    write_results(results_path, results)
    jobs = {id(target): (record, chosen) for target, record, chosen in plan}
    file = _ResultsFile(results, results_path)

    def measure(job: Job) -> None:
        target = job.target
        record, chosen = jobs[id(target)]
        with (contextlib.nullcontext() if job.concurrent else ui.progress()) as progress:
            task = progress.add_task(f"bench {target.name}", total=len(chosen)) if progress else None
            for art in chosen:
                if job.stopping:
                    return
                if job.unreachable:
                    result = unreachable_result(art, target, job.unreachable)
                elif (reason := not_runnable(art.backend)) is not None:
                    result = export_only_result(art, target, reason)
                else:
                    result = bench_artifact(art, target, evalset, ws.run_dir / "bench" / target.name,
                                            on_step=ui.step, cold_disk=ws.cfg.bench.cold_disk, runner=job.runner)
                # What the export's check against PyTorch found: verified, or allowed unverified.
                result["verification"] = art.meta.get("verification")
                if "quantization" in art.meta:  # how its INT8 was chosen (compress/accuracy.py)
                    result["quantization"] = art.meta["quantization"]
                if art.form:
                    result["form"] = art.form
                if art.meta.get("reference"):  # the unpruned student beside a pruned one: measured, not gated
                    result["reference"] = True
                file.add(record, target.name, result)
                if progress:
                    progress.advance(task)

    measure_all([target for target, _, _ in plan], measure, ui)


def device_engine_sources(artifacts: list[Artifact]) -> list[Artifact]:
    """What an SSH device builds its TensorRT engines from: the verified ONNX Runtime exports
    (FP32, FP16, and INT8 in QDQ form, which TensorRT quantizes explicitly), each measured as a
    TensorRT artifact (an engine made elsewhere would not run there: RELIABILITY 6)."""
    return [dataclasses.replace(a, backend="tensorrt", meta={**a.meta, "engine_source": str(a.path)})
            for a in artifacts if a.backend == "onnxruntime" and a.kind == "onnx"]


def reference_teacher_fields(metrics: dict) -> dict:
    """The teacher's held-out validation score and weights, as results["reference"] states them.

    teacher_val_top1: top-1 on the validation split (the one checked against chance before
    distillation; None for an embedding teacher); teacher_val_samples: that split's size;
    teacher_weights_sha256: sha256 of the main weights file, None for an entrypoint without one
    (reports say "none (factory's own initialisation)"); teacher_weights_files: every weights
    file with its sha256 (an ONNX teacher's .onnx and its external data).
    """
    return {"teacher_val_top1": metrics.get("teacher_val_acc"),
            "teacher_val_samples": metrics.get("val_samples"),
            "teacher_weights_sha256": metrics.get("teacher_weights_sha256"),
            "teacher_weights_files": metrics.get("teacher_weights_files", [])}


def write_reports(results: dict, folder: Path, ui: UI, html_page: bool = True) -> None:
    """report.md, report.html and junit.xml beside results.json; the Markdown also goes to the
    GitHub Actions job summary when there is one."""
    from edgedistill.report import html, junit
    from edgedistill.report.step_summary import append_step_summary

    markdown = render_markdown(results)
    atomic_write_text(folder / "report.md", markdown)
    if html_page:
        atomic_write_text(folder / "report.html", html.render(results))
    atomic_write_text(folder / "junit.xml", junit.render(results))
    try:
        append_step_summary(markdown)
    except OSError as e:  # a broken summary path must not replace the verdict's exit code
        ui.step(f"warning: could not append to $GITHUB_STEP_SUMMARY: {e}")


def apply_gate(results: dict) -> dict:
    from edgedistill.gate import gate_results

    verdict, checks = gate_results(results)
    results["verdict"] = verdict
    results["checks"] = [c.to_json() for c in checks]
    return results


def render_markdown(results: dict) -> str:
    from edgedistill.report.markdown import render

    return render(results)


def speedups(results: dict) -> list[str]:
    """One line per backend: each student artifact against the teacher on the same runtime."""
    lines = []
    for target in results["targets"]:
        ok = [r for r in target["results"] if r.get("warm")]
        teachers = {r["backend"]: r for r in ok if r["role"] == "teacher"}
        for r in ok:
            t = teachers.get(r["backend"])
            if r["role"] != "student" or t is None:
                continue
            s50, t50 = r["warm"]["summary"]["p50_ms"], t["warm"]["summary"]["p50_ms"]
            # Model files name theirs "reference"; without labels no top-1 was measured.
            what = "reference" if results["reference"].get("models_from") == "files" else "teacher"
            s1, t1 = (r.get("accuracy") or {}).get("top1"), (t.get("accuracy") or {}).get("top1")
            top1 = "" if s1 is None or t1 is None else f", top-1 {s1:.2%} vs {t1:.2%}"
            q, tq = r.get("quality") or {}, t.get("quality") or {}
            if q.get("metric") not in (None, "top1") and q.get("value") is not None and tq.get("value") is not None:
                top1 += f", {q['metric']} {q['value']:.4f} vs {tq['value']:.4f}"
            against = f"reference {t['artifact']}" if what == "reference" else "teacher"
            lines.append(f"{target['name']}: {r['artifact']} p50 {s50:.3f} ms vs {against} {t50:.3f} ms "
                         f"({t50 / s50:.1f}x faster){top1}")
        # A pruned student against the unpruned one of the same precision and runtime.
        unpruned = {(r["precision"], r["backend"]): r for r in ok if r["role"] == "student" and not r.get("form")}
        for r in ok:
            u = unpruned.get((r["precision"], r["backend"]))
            if not r.get("form") or u is None:
                continue
            p50, u50 = r["warm"]["summary"]["p50_ms"], u["warm"]["summary"]["p50_ms"]
            s1, u1 = (r.get("accuracy") or {}).get("top1"), (u.get("accuracy") or {}).get("top1")
            top1 = "" if s1 is None or u1 is None else f", top-1 {s1:.2%} vs {u1:.2%}"
            lines.append(f"{target['name']}: {r['artifact']} p50 {p50:.3f} ms vs unpruned {u50:.3f} ms "
                         f"({p50 / u50:.2f}x of it){top1}")
    return lines


def gate(results_path: Path, targets: list[Path] | None = None, baseline: Path | None = None,
         max_regression_pct: float = MAX_REGRESSION_PCT, alpha: float = ALPHA,
         max_cold_regression_pct: float = MAX_COLD_REGRESSION_PCT, gate_cold_start: bool = False) -> dict:
    """Re-gate a results file, optionally against other target budgets (matched by name) and
    against a baseline results file (a regression check per student metric: see regression.py).

    The file is not rewritten: the verdict is returned (and carried by the exit code); with a
    baseline, the comparison is returned under "regression"."""
    from edgedistill.report.results import load_results

    results = load_results(results_path)
    for path in targets or []:
        t = load_target(path)
        matches = [r for r in results["targets"] if r["name"] == t.name]
        if not matches:
            have = ", ".join(r["name"] for r in results["targets"])
            raise UsageError(f"target {t.name!r} from {path} is not in {results_path} (it has: {have})")
        for m in matches:
            m["budgets"] = t.budgets.model_dump()
    if baseline is None:
        return _say_incomplete(apply_gate(results), results=(results_path, results))
    base = load_results(baseline)
    gated = _gate_against_baseline(apply_gate(results), base, max_regression_pct, alpha,
                                   max_cold_regression_pct, gate_cold_start)
    return _say_incomplete(gated, results=(results_path, results), baseline=(baseline, base))


def _say_incomplete(gated: dict, **documents: tuple[Path, dict]) -> dict:
    """List why the verdict is INCONCLUSIVE when a file is incomplete (`incomplete`: one line each)."""
    from edgedistill.report.results import incomplete_reason

    gated["incomplete"] = [f"{'baseline ' if role == 'baseline' else ''}{path}: {reason}"
                           for role, (path, doc) in documents.items() if (reason := incomplete_reason(doc))]
    return gated


def _gate_against_baseline(results: dict, base: dict, max_regression_pct: float, alpha: float,
                           max_cold_regression_pct: float, gate_cold_start: bool) -> dict:
    """Add the regression checks to the budget checks and decide the verdict over all of them."""
    from edgedistill.gate import Check, final_verdict
    from edgedistill.regression import compare_results, gate_checks

    # The bootstrap interval is for people reading `compare`; the gate decides on the test alone.
    comparison = compare_results(base, results, max_regression_pct, alpha, bootstrap=False,
                                 max_cold_regression_pct=max_cold_regression_pct,
                                 gate_cold_start=gate_cold_start)
    results["checks"] += [c.to_json() for c in gate_checks(comparison)]
    results["verdict"] = final_verdict([Check(**c) for c in results["checks"]], results, base)
    results["regression"] = comparison.to_json()
    return results


def compare(base_path: Path, head_path: Path, max_regression_pct: float = MAX_REGRESSION_PCT,
            alpha: float = ALPHA, max_cold_regression_pct: float = MAX_COLD_REGRESSION_PCT):
    """Base vs head, every matched artifact (teacher included): deltas and their significance.

    An incomplete file (an interrupted bench) is not compared: InconclusiveError (exit 5)."""
    from edgedistill.regression import compare_results
    from edgedistill.report.results import incomplete_reason, load_results

    docs = {path: load_results(path) for path in (base_path, head_path)}
    for path, doc in docs.items():
        if reason := incomplete_reason(doc):
            raise InconclusiveError(f"{path}: {reason}", "re-run `edgedistill bench` so every artifact is measured")
    return compare_results(docs[base_path], docs[head_path], max_regression_pct, alpha,
                           max_cold_regression_pct=max_cold_regression_pct)


def compress(ws: Workspace, ui: UI, search: bool = False, first: bool = False) -> dict:
    """The pipeline; with `search` (or a [search] table in the config) the search of search.py."""
    if search or first or "search" in ws.cfg.model_fields_set:
        from edgedistill.search import run_search

        return run_search(ws, ui, first=first or ws.cfg.search.first)
    check_backends_asked(ws.cfg)
    d = distill(ws, ui)
    artifacts, d = export_all(ws, ui, d)
    return bench(ws, ui, artifacts, d)


def export_all(ws: Workspace, ui: UI, d: Distilled) -> tuple[list[Artifact], Distilled]:
    """The run's artifacts: the distilled student's and the teacher's, and with [compress.prune]
    the pruned student's too; `d` with the pruning's metrics (results' reference.distill)."""
    artifacts = export(ws, ui, d)
    if ws.cfg.compress.prune is None:
        return artifacts, d
    # The pruned student is what ships and is gated; the unpruned one is measured beside it as
    # the reference (latency and accuracy before pruning), like the teacher, never gated.
    for a in artifacts:
        if a.role == "student":
            a.meta["reference"] = True
    pruned = prune_student(ws, ui, d, ws.cfg.compress.prune)
    return artifacts + export(ws, ui, pruned), dataclasses.replace(d, metrics={**d.metrics, "pruning": pruned.metrics})


def doctor() -> list[dict]:
    rows = []
    for name, (_, extra) in BACKENDS.items():
        avail = get_backend(name).availability()
        rows.append({"backend": name, "usable": avail.ok, "version": avail.version,
                     "reason": avail.reason, "extra": extra, "note": avail.note})
    return rows


# ---------------------------------------------------------------- bench model files

DEFAULT_FILES_OUTPUT = Path("runs") / "bench" / "results.json"
SYNTHETIC_SAMPLES = 32  # drawn inputs per model: varied enough for the caching check, cheap to run
SYNTHETIC_SEED = 0
SYNTHETIC_INT_RANGE = (0, 100)  # integer inputs (token ids, indices) are drawn in [0, 100)


@dataclass
class FilesPlan:
    """Everything `bench PATH ...` checked before it writes or times anything."""

    artifacts: list  # FileArtifact, role student: measured and gated
    reference: object | None  # FileArtifact, role teacher: measured once, outputs compared with
    targets: list[TargetConfig]
    budgets_from: list[str]  # per target: "target", or why its budgets do not apply
    inputs: dict[str, dict]  # artifact name -> describe_model's answer
    arrays: dict[str, dict[str, np.ndarray]]  # artifact name -> its inputs keyed by its input names
    shapes: dict[str, dict[str, list[int]]]  # artifact name -> the --shape values for its inputs
    labels: np.ndarray | None
    data_note: str  # what the inputs are (a file, or what was drawn and that accuracy is not measured)
    output: Path
    work: Path | None = None  # a temporary folder the plan made (TensorRT engines built here), or None
    data_description: dict | None = None  # the inputs, for the results file (synthesize's description)


def files_target(path: Path | None, threads: int | None) -> tuple[TargetConfig, str]:
    """The target a model file is measured on, and where its budgets come from.

    With no --target: the local CPU (targets/local-cpu.toml) for its device and measurement
    settings, without its budgets, which are the built-in student's (p90 <= 2 ms means nothing
    for a user's model): a measurement, not a gate. --target FILE gates against FILE's budgets.
    """
    from edgedistill.config import BudgetTable

    target = load_target(path or Path("local-cpu"))
    how = "target"
    if path is None:
        target = target.model_copy(update={"budgets": BudgetTable()})
        how = ("no --target given: measured on the local CPU profile (local-cpu) without its budgets, "
               "which are the built-in student's")
    if threads is not None:
        target = target.model_copy(update={"threads": threads})
    return target, how


def _has_budgets(target: TargetConfig) -> bool:
    b = target.budgets
    return bool(b.model_dump(exclude={"overrides"}, exclude_none=True)) or any(
        o.model_dump(exclude_none=True) for o in b.overrides.values())


def _dynamic_dims(inputs: list[dict], shapes: dict[str, list[int]]) -> list[str]:
    """'name dimension k' of every dynamic dimension --shape does not fix (the batch axis,
    dimension 0, is measured at 1 and swept by the target's batch sizes)."""
    out = []
    for spec in inputs:
        if spec["name"] in shapes:
            continue
        out += [f"{spec['name']!r} dimension {k}" for k, d in enumerate(spec["shape"]) if d is None and k > 0]
    return out


def _with_shapes(inputs: list[dict], shapes: dict[str, list[int]]) -> list[dict]:
    out = []
    for spec in inputs:
        shape = shapes.get(spec["name"]) or [1 if (d is None and k == 0) else d for k, d in enumerate(spec["shape"])]
        out.append({**spec, "shape": list(shape)})
    return out


def _check_shape_names(shapes: dict[str, list[int]], described: dict[str, dict]) -> None:
    import difflib

    names = list(dict.fromkeys(i["name"] for d in described.values() for i in d["inputs"]))
    for name, shape in shapes.items():
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise UsageError(f"--shape {name}={'x'.join(map(str, shape))}: the model has no input {name!r}; "
                             f"its inputs are {', '.join(names)}",
                             f"did you mean {close[0]!r}?" if close else "name one of the model's inputs")
    for art_name, d in described.items():
        for spec in d["inputs"]:
            if spec["name"] in shapes and len(shapes[spec["name"]]) != len(spec["shape"]):
                shown = "x".join("?" if x is None else str(x) for x in spec["shape"])
                raise UsageError(f"--shape {spec['name']}={'x'.join(map(str, shapes[spec['name']]))}: "
                                 f"{art_name} declares {len(spec['shape'])} dimensions ({shown}), found "
                                 f"{len(shapes[spec['name']])}", f"give all {len(spec['shape'])} dimensions")


def _keyed_like(arrays: dict[str, np.ndarray], first: list[dict], inputs: list[dict]) -> dict[str, np.ndarray]:
    """The same arrays for another model's inputs: by name where they share names, else by position
    (an ExecuTorch .pte keeps no names: input_0, input_1 ...), so every model and the reference
    are measured on the same samples."""
    names = [i["name"] for i in inputs]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1 and len(arrays) == 1:  # one array for a one-input model, whatever its key
        return {names[0]: next(iter(arrays.values()))}  # (docs/bench-files.md: `x`)
    if len(first) == len(inputs):
        return {n: arrays[f["name"]] for n, f in zip(names, first) if f["name"] in arrays}
    return arrays


def plan_files(paths: list[Path], *, backends: list[str] = (), targets: list[Path] = (),
               threads: int | None = None, shapes: dict[str, list[int]] | None = None,
               data: Path | None = None, reference: Path | None = None, output: Path | None = None,
               on_step=lambda s: None) -> FilesPlan:
    """Check every input of `bench PATH ...` (exit 2 or 6, nothing written) and describe each model."""
    import shutil
    import tempfile

    from edgedistill.model_files import artifacts_for, build_engine, inspect

    shapes = dict(shapes or {})
    output = Path(output) if output is not None else DEFAULT_FILES_OUTPUT
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory, expected a results file path",
                         f"name a file inside it, e.g. -o {output / 'results.json'}")
    for name in dict.fromkeys(backends):
        get_backend(name)
    models = [inspect(p) for p in paths]
    ref_model = inspect(reference) if reference is not None else None
    artifacts, ref = artifacts_for(models, list(backends), ref_model)
    every = artifacts + ([ref] if ref else [])
    chosen = [files_target(p, threads) for p in (targets or [None])]
    # TensorRT on SSH devices: each builds its engine from the ONNX with its own trtexec (an
    # engine runs only on the GPU and TensorRT version that built it), so this machine needs no
    # TensorRT; a run cannot mix them with targets measured here, which need an engine built here.
    on_devices = any(a.backend == "tensorrt" for a in every) and all(t.runner == "ssh" for t, _ in chosen)
    if any(a.backend == "tensorrt" for a in every) and not on_devices and any(t.runner == "ssh" for t, _ in chosen):
        raise UsageError("TensorRT engines are built where they run: on this machine for a local target, "
                         "on the device for an SSH target; found both kinds of target in one run",
                         "bench the SSH targets and the local ones in separate runs")
    missing = unavailable_backends([a.backend for a in every if not (on_devices and a.backend == "tensorrt")])
    if missing:
        name, reason = next(iter(missing.items()))
        used_by = next(a.path for a in every if a.backend == name)
        raise UsageError(f"{used_by}: {name} cannot run here: {reason}",
                         "install it, or choose another --backend (see `edgedistill doctor`)")
    if data is not None:
        from edgedistill.bench.model_inputs import read_arrays

        found = read_arrays(Path(data))  # a bad file is refused before any model is loaded
    else:
        found = None
    # A temporary folder for what the plan builds (TensorRT engines: built here, never taken from
    # a user); bench_files removes it, and so does a refusal below.
    work = Path(tempfile.mkdtemp(prefix="edgedistill-bench-files-"))
    try:
        if not on_devices:
            artifacts = [build_engine(a, work) if a.backend == "tensorrt" else a for a in artifacts]
            ref = build_engine(ref, work) if ref is not None and ref.backend == "tensorrt" else ref
        plan = FilesPlan(artifacts, ref, [t for t, _ in chosen], [how for _, how in chosen], {}, {}, {},
                         None, "", output, work)
        _describe_and_feed(plan, shapes, data, found, on_step)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return plan


def _describe_and_feed(plan: FilesPlan, shapes: dict[str, list[int]], data: Path | None,
                       found: dict[str, np.ndarray] | None, on_step) -> None:
    """Each model's inputs as its runtime loads them (a describe probe), checked against --shape
    and the data (or drawn), before any timing."""
    from edgedistill.bench import model_inputs
    from edgedistill.bench.harness import describe_model

    every = ([plan.reference] if plan.reference else []) + plan.artifacts
    tgt = plan.targets[0]  # the first target's device describes the models
    described = plan.inputs
    for art in every:  # quietly: a refusal below is then the only thing printed
        if art.backend == "tensorrt" and art.kind == "onnx":  # an engine the device builds: the
            # ONNX graph's inputs are the engine's, read here by ONNX Runtime
            described[art.name] = describe_model(dataclasses.replace(art, backend="onnxruntime"), tgt)
        else:
            described[art.name] = describe_model(art, tgt)
    _check_shape_names(shapes, described)
    for art in every:
        plan.shapes[art.name] = {i["name"]: shapes[i["name"]] for i in described[art.name]["inputs"]
                                 if i["name"] in shapes}
        if plan.shapes[art.name] and art.backend == "openvino":  # reshaped before compiling: check it takes
            described[art.name] = describe_model(art, tgt, shapes=plan.shapes[art.name])
    for art in every:
        if dynamic := _dynamic_dims(described[art.name]["inputs"], shapes):
            first = described[art.name]["inputs"][0]
            example = "x".join("1" if d is None else str(d) for d in first["shape"])
            raise UsageError(f"{art.path}: {', '.join(dynamic)} is dynamic and no --shape fixes it",
                             f"give the shape to measure, e.g. --shape {first['name']}={example} "
                             "(like benchmark_app -shape)")
    first_inputs = _with_shapes(described[every[0].name]["inputs"], shapes)
    if found is not None:
        canonical = dict(found)
        # y is the labels unless the model itself has an input named y.
        plan.labels = canonical.pop("y", None) if not any(i["name"] == "y" for i in first_inputs) else None
        plan.data_note = f"inputs from {data}" + (f", labels y ({len(plan.labels)} samples)"
                                                  if plan.labels is not None
                                                  else "; no labels y in it: accuracy not measured")
        plan.data_description = {"kind": "file", "path": str(Path(data).absolute()),
                                 "sha256": sha256_file(Path(data)), "labels": plan.labels is not None}
    else:
        canonical, drawn = model_inputs.synthesize(first_inputs, shapes, SYNTHETIC_SAMPLES, SYNTHETIC_SEED,
                                                   int_range=SYNTHETIC_INT_RANGE)
        plan.data_description = drawn
        plan.data_note = (f"no --data: {drawn['summary']}; accuracy not measured "
                          "(pass --data FILE.npz with y to measure it)")
    for art in every:
        inputs = _with_shapes(described[art.name]["inputs"], shapes)
        mine = _keyed_like(canonical, first_inputs, inputs)
        if problems := model_inputs.match(inputs, mine, plan.shapes[art.name] or None):
            source = f"--data {data}" if data is not None else "the drawn inputs"
            table = model_inputs.mismatch_table(problems).splitlines()
            hint = table.pop()[len("hint: "):] if table and table[-1].startswith("hint: ") else (
                "give one array per input name (or x for a one-input model), samples on axis 0")
            error = UsageError(f"{art.path}: {source} does not fit the model's inputs (expected vs found below)",
                               hint)
            error.table = table  # printed under the line (cli._handle_errors)
            raise error
        plan.arrays[art.name] = mine
    if plan.labels is not None:
        n = len(next(iter(canonical.values())))
        labels = plan.labels
        if labels.ndim != 1 or len(labels) != n or labels.dtype.kind not in "iu":
            raise UsageError(f"--data {data}: y must hold one integer class per sample ({n}), "
                             f"found shape {list(labels.shape)} dtype {labels.dtype}",
                             "store the labels as an integer vector y, one per sample of the inputs")


def _compare_outputs(got: np.ndarray, ref: np.ndarray) -> dict:
    """How a model's outputs differ from the reference's on the same inputs (first output)."""
    from edgedistill.quality import cosine_per_vector

    if got.shape != ref.shape:
        return {"comparable": False, "reason": f"output shape {list(got.shape)} vs reference {list(ref.shape)}"}
    a = got.reshape(len(got), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    cosine = cosine_per_vector(a, b)
    out = {"comparable": True, "samples": int(len(a)), "max_abs_diff": float(np.abs(a - b).max()),
           "mean_abs_diff": float(np.abs(a - b).mean()), "mean_cosine": float(cosine.mean()),
           "min_cosine": float(cosine.min())}
    if got.ndim == 2:
        out["top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
    return out


def _files_task(labels: np.ndarray | None, ref_outputs: np.ndarray | None):
    """How `bench PATH` scores each model: top-1 with --data's labels (against the reference's
    top-1 when there is one); without labels, cosine and recall@10 to --reference's outputs on
    the same inputs; else nothing to score by (None)."""
    from edgedistill.quality import Task

    if labels is not None:
        return Task("top1", labels, ref_outputs)
    if ref_outputs is not None:
        return Task("cosine", None, ref_outputs, ["recall@10"])
    return None


def bench_files(plan: FilesPlan, ui: UI, cold_disk: bool = False) -> dict:
    """Measure user-given model files with the pipeline's harness; write plan.output and the reports.

    Same schema, same rules as `bench`: the file is replaced before anything is measured and
    rewritten after each artifact (`complete: false` until the last), so an interrupted run never
    passes `gate`. The reference, when given, is measured first (role teacher: never gated) and
    every model's outputs are compared with its outputs on the same inputs."""
    import io
    import shutil
    import tempfile

    from edgedistill.artifacts import atomic_write_bytes
    from edgedistill.bench.environment import environment
    from edgedistill.bench.fleet import Job, measure_all
    from edgedistill.bench.harness import EvalSet, bench_artifact, unreachable_result
    from edgedistill.interrupts import Interrupted
    from edgedistill.report.results import new_results, write_results

    results_path = plan.output
    ref = plan.reference
    results = new_results(results_path.parent.name or "bench", environment(seed=SYNTHETIC_SEED),
                          {"teacher_top1": None, "test_samples": None, "models_from": "files",
                           "inputs": plan.data_note, "inputs_detail": plan.data_description,
                           "reference_model": ref.source() if ref else None})
    for stale in ("report.md", "report.html", "junit.xml"):
        (results_path.parent / stale).unlink(missing_ok=True)
    work = plan.work or Path(tempfile.mkdtemp(prefix="edgedistill-bench-files-"))  # plan_files made it
    try:
        try:
            write_results(results_path, results)
        except OSError as e:
            raise UsageError(f"cannot write --output {results_path}: {e.strerror or e}",
                             "give a results file path in a folder you can write") from None
        order = ([ref] if ref else []) + plan.artifacts
        for target, budgets_from in zip(plan.targets, plan.budgets_from):
            record = {"name": target.name, "runner": target.runner, "device": target.device,
                      "threads": target.threads, "budgets": target.budgets.model_dump(),
                      "budgets_from": budgets_from,
                      "measurement": target.measurement.model_dump(), "sweep": target.sweep.model_dump(),
                      "allow_fallback": target.allow_fallback, "cold_disk": cold_disk, "results": []}
            results["targets"].append(record)
            results["missing"] += [{"target": target.name, "artifact": a.name} for a in order]
        write_results(results_path, results)
        records = {id(target): record for target, record in zip(plan.targets, results["targets"])}
        file = _ResultsFile(results, results_path)

        def measure(job: Job) -> None:
            target, record = job.target, records[id(job.target)]
            ref_outputs = None
            for art in order:
                if job.stopping:
                    return
                if job.unreachable:
                    result = unreachable_result(art, target, job.unreachable)
                else:
                    result = _bench_file(art, target, job.runner, ref_outputs)
                    if art is ref:
                        ref_outputs = result.pop("_outputs", None)
                file.add(record, target.name, result)

        def _bench_file(art, target: TargetConfig, runner, ref_outputs):
            """One model file on one target; the reference's outputs come back under `_outputs`."""
            folder = work / target.name  # per target: devices measured at once never share files
            folder.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **plan.arrays[art.name])
            inputs_path = folder / f"{art.name}.inputs.npz"
            atomic_write_bytes(inputs_path, buf.getvalue())
            teacher_pred = ref_outputs.argmax(1) if ref_outputs is not None and ref_outputs.ndim == 2 else None
            evalset = EvalSet(inputs_path, plan.labels, teacher_pred, _files_task(plan.labels, ref_outputs))
            result = bench_artifact(art, target, evalset, folder, on_step=ui.step, cold_disk=cold_disk,
                                    shapes=plan.shapes[art.name] or None, runner=runner)
            result["source"] = art.source()
            outputs_file = folder / f"{art.name}.outputs.npy"
            if art is ref:
                if outputs_file.is_file():
                    result["_outputs"] = np.load(outputs_file)
                    if plan.labels is not None:
                        with file.lock:
                            results["reference"]["teacher_top1"] = (result.get("accuracy") or {}).get("top1")
                            results["reference"]["test_samples"] = int(len(plan.labels))
                    if (task := _files_task(plan.labels, result["_outputs"])) is not None:
                        with file.lock:
                            results["reference"]["quality"] = task.reference()
            elif ref is not None:
                result["reference_comparison"] = (
                    {"reference": ref.name, **_compare_outputs(np.load(outputs_file), ref_outputs)}
                    if ref_outputs is not None and outputs_file.is_file()
                    else {"reference": ref.name, "comparable": False,
                          "reason": "the reference or this model was not measured"})
            return result

        measure_all(plan.targets, measure, ui)
    except Interrupted as e:
        _mark_interrupted(results, results_path, ui, e)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _complete(results)
    from edgedistill.gate import ungated_reason

    # No budgets: a measurement, not a failed gate. The recorded verdict stays what `gate` would
    # say of this file (INCONCLUSIVE), so gating it later without budgets still cannot pass.
    results["not_gated"] = ungated_reason(results)
    write_results(results_path, results)
    write_reports(results, results_path.parent, ui)
    return results


# ---------------------------------------------------------------- targets (profiles, devices)


def shipped_targets() -> list[Path]:
    from edgedistill.config import SHIPPED_TARGETS

    return sorted(SHIPPED_TARGETS.glob("*.toml"))


def list_targets() -> list[dict]:
    """Every shipped profile: name, runner, device, backends, description (or why it does not load)."""
    from edgedistill.errors import ConfigError

    rows = []
    for path in shipped_targets():
        try:
            t = load_target(path)
        except ConfigError as e:  # a broken shipped file is listed, not hidden (its test fails too)
            rows.append({"name": path.stem, "file": str(path), "error": e.message})
            continue
        rows.append({"name": t.name, "file": str(path), "runner": t.runner, "device": t.device,
                     "backends": list(t.backends), "description": t.description})
    return rows


def target_source(spec: Path) -> tuple[Path, bool]:
    """The file a NAME|FILE argument loads, and whether it is a shipped profile."""
    from edgedistill.config import SHIPPED_TARGETS, resolve_target

    path = resolve_target(Path(spec))
    try:
        shipped = path.resolve().parent == SHIPPED_TARGETS.resolve()
    except OSError:
        shipped = False
    return path, shipped


def show_target(spec: Path) -> dict:
    """The resolved profile (every default filled in) and where it came from."""
    path, shipped = target_source(spec)
    target = load_target(path)
    return {"source": str(path), "shipped": shipped, "target": target.model_dump(mode="json")}


def validate_targets(paths: list[Path]) -> list[dict]:
    """Per file: ok and its name, or the loader's one-line error and hint."""
    from edgedistill.errors import ConfigError

    rows = []
    for p in paths:
        try:
            t = load_target(p)
            rows.append({"file": str(p), "ok": True, "name": t.name, "runner": t.runner})
        except ConfigError as e:
            rows.append({"file": str(p), "ok": False, "error": e.message, "hint": e.hint})
    return rows


def probe_target(spec: Path, note=lambda s: None) -> dict:
    """Reach the target's device through its runner and describe it (probe/device_info.py's
    object), with the target's name and runner. The runner is always closed; an unreachable
    device raises InconclusiveError (exit 5), an unknown SSH host key UnsafeModelError (exit 6)."""
    from edgedistill.bench.runners import open_runner

    path, _ = target_source(spec)
    target = load_target(path)
    runner = open_runner(target, note)
    try:
        describe = getattr(runner, "device_info", None)
        if describe is None:
            raise InconclusiveError(f"target {target.name}: the {runner.kind} runner cannot describe its device "
                                    "(it has no device_info())")
        info = describe()
    finally:
        runner.close()
    where = {"ssh": lambda: target.ssh.host, "adb": lambda: target.adb.serial or "the only attached device"}
    return {"target": target.name, "runner": target.runner,
            "reached": where.get(target.runner, lambda: "this machine")(), "device": info}
