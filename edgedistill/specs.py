"""Turn spec strings ("pkg.mod:factory", "model.pt2") and weight files into models.

Models are programs: which files are loaded, and how, is edgedistill.trust's policy (weights
through safetensors or weights_only=True; a .pt2 or a refused pickle only when trusted by its
sha256; TensorRT engines never). A file the safe loader refuses is reported, never retried
with weights_only=False unless the user trusts that exact file.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from edgedistill.errors import ModelMismatchError, UsageError
from edgedistill.trust import (
    ENGINE_SUFFIXES,
    ModelFile,
    load_checkpoint,
    load_program,
    refuse_engine,
    trusted_hashes,
)

if TYPE_CHECKING:
    from edgedistill.data.inputs import Inputs

# What model checks run on: the data's first samples (one tensor or named ones), or a shape
# whose zeros stand in for them.
InputsOrShape = Union[tuple[int, ...], "Inputs"]

_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MODEL_SPEC_FORMS = (
    '"pkg.mod:factory" (called with no arguments), a torch.export ".pt2" file (trusted by its sha256), '
    'an ".onnx" file (teacher only) or "hf:<folder>" (a transformers model; needs edgedistill[hf])'
)
_SHOW_KEYS = 5  # how many mismatching state-dict keys an error lists


def is_entrypoint(spec: str) -> bool:
    return bool(_ENTRYPOINT.match(spec))


def call_entrypoint(spec: str, what: str) -> object:
    """Import "pkg.mod:attr" and call it with no arguments; `what` ("teacher", "data") names it."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(
            f"{what} spec {spec!r}: cannot import module {module_name!r} ({e})",
            "check the spelling, and that the module is installed or on PYTHONPATH",
        ) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{what} spec {spec!r}: module {module_name!r} has no callable {attr!r}")
    try:
        return factory()
    except Exception as e:  # the user's code: say which factory failed and how
        raise UsageError(
            f"{what} factory {spec!r} failed: {type(e).__name__}: {e}",
            "the factory must work when called with no arguments",
        ) from e


def load_model(spec: str, weights: Path | None = None, *, role: str,
               trusted: Collection[str] = frozenset(), pipeline_dir: Path | None = None) -> nn.Module:
    """Build the model a spec names, load optional weights, return it in eval mode.

    `trusted`: sha256 values of files the user trusts to run code when loaded (a .pt2 program,
    a pickle that weights_only refuses); every other such file is refused (exit 6), except a
    .pt2 that a stage wrote under `pipeline_dir` (the run's --out-dir) and recorded unchanged.
    A ".pt2" program keeps the train/eval behaviour it was exported with (torch.export modules
    cannot switch modes).
    """
    trusted = trusted_hashes(trusted)
    if spec.lower().endswith(ENGINE_SUFFIXES):
        refuse_engine(Path(spec), role)
    if spec.lower().endswith(".pt2"):
        model = load_program(ModelFile.read(Path(spec), role, "model"), role, trusted, pipeline_dir)
    elif spec.lower().endswith(".onnx"):
        model = _load_onnx(Path(spec), role)
    elif spec.startswith("hf:"):
        from edgedistill.distill.teachers import load_hf

        model = load_hf(spec.removeprefix("hf:"), role)
    elif spec.startswith(("prune:", "shallow:")):
        # Derived students need the loaded teacher and the data's shape: api.distill builds them.
        raise UsageError(f"{role} spec {spec!r} derives a student from the teacher; "
                         "it is only valid as the student of a distill run")
    elif is_entrypoint(spec):
        model = _call_factory(spec, role)
    else:
        raise UsageError(f"{role} spec {spec!r} is not understood; expected {MODEL_SPEC_FORMS}")
    if weights is not None:
        _load_state_dict(model, read_state_dict(Path(weights), role, trusted), Path(weights), role)
    _refuse_non_finite(model, role)
    set_mode(model, training=False)
    return model


def load_student(
    spec: str,
    weights: Path | None,
    *,
    teacher: nn.Module,
    input_shape: InputsOrShape,
    note: Callable[[str], None] | None = None,
    trusted: Collection[str] = frozenset(),
    pipeline_dir: Path | None = None,
) -> nn.Module:
    """The student a spec names: like load_model, or derived from the loaded teacher
    ("prune:<width>", "shallow:<k>"); `note` receives the derived student's one-line summary."""
    from edgedistill.distill.students import derive_student, is_derived

    if not is_derived(spec):
        return load_model(spec, weights, role="student", trusted=trusted, pipeline_dir=pipeline_dir)
    _probe_output(teacher, "teacher", input_shape)  # a teacher that cannot take the data: say so first
    derived = derive_student(spec, teacher, input_shape)
    if note is not None:
        note(derived.summary)
    model = derived.student
    if weights is not None:  # e.g. a derived student trained earlier, loaded to go on from it
        _load_state_dict(model, read_state_dict(Path(weights), "student", trusted), Path(weights), "student")
    _refuse_non_finite(model, "student")
    set_mode(model, training=False)
    return model


def set_mode(model: nn.Module, *, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:
        pass  # a torch.export module: its mode was fixed when it was exported


def _call_factory(spec: str, role: str) -> nn.Module:
    model = call_entrypoint(spec, role)
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"{role} factory {spec!r} must return a torch.nn.Module, found {type(model).__name__}"
        )
    return model


def _load_onnx(path: Path, role: str) -> nn.Module:
    if role != "teacher":
        raise UsageError(f"{role} spec {path}: an ONNX model can only be a teacher "
                         "(a black box: it has no trainable weights)",
                         "give the student as a pkg.mod:factory, prune:<width> or shallow:<k>")
    from edgedistill.distill.teachers import OnnxTeacher

    try:
        return OnnxTeacher(path)
    except UsageError as e:  # name the stage: the format alone does not say where it failed
        raise UsageError(f"loading {role} model: {e.message}", e.hint) from e


def read_state_dict(path: Path, role: str, trusted: Collection[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Read a .safetensors file or a state_dict .pt/.pth without running any code from it
    (a pickle runs only when the user trusts its sha256: edgedistill.trust)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        refuse_engine(path, role)
    if not path.is_file():
        raise UsageError(f"loading {role} weights: file not found: {path}")
    if suffix == ".safetensors":  # data: no trust to decide, so no need to read it into memory first
        try:
            return load_file(path)
        except SafetensorError as e:
            raise UsageError(
                f"loading {role} weights: {path} is not a readable safetensors file ({e})"
            ) from e
    if suffix in (".pt", ".pth"):
        return _as_state_dict(load_checkpoint(path, role, trusted_hashes(trusted)), path, role)
    raise UsageError(
        f"loading {role} weights: unsupported file type {suffix or '(none)'!r} for {path}",
        'use ".safetensors" or a state_dict saved with torch.save as ".pt"/".pth"',
    )


def _as_state_dict(obj: object, path: Path, role: str) -> dict[str, torch.Tensor]:
    # Training frameworks often wrap the weights: {"state_dict": {...}, "epoch": 3, ...}.
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    found = (
        f"a mapping with keys {list(obj)[:_SHOW_KEYS]}" if isinstance(obj, Mapping) else type(obj).__name__
    )
    raise UsageError(
        f"loading {role} weights: {path} should hold a state_dict (parameter name -> tensor), found {found}",
        "save it with torch.save(model.state_dict(), path)",
    )


def _load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, role: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:_SHOW_KEYS])}{', …' if len(keys) > _SHOW_KEYS else ''}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape file vs model", wrong_shape),
        )
        if keys
    ]
    if problems:
        raise UsageError(
            f"loading {role} weights: {path} does not fit the model: {'; '.join(problems)}",
            "check that the weights were saved from the same architecture as the spec builds",
        )
    model.load_state_dict(state)


def _refuse_non_finite(model: nn.Module, role: str) -> None:
    # A NaN weight makes every logit NaN; name the tensor now rather than fail at step 1.
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"{role} weights: tensor {name!r} holds NaN or Inf values")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_compatible(
    teacher: nn.Module, student: nn.Module, input_shape: InputsOrShape, num_classes: int
) -> None:
    """Refuse, before any training, a teacher, student and data that do not fit together."""
    teacher_classes = _output_classes(teacher, "teacher", input_shape)
    student_classes = _output_classes(student, "student", input_shape)
    if not teacher_classes == student_classes == num_classes:
        raise ModelMismatchError(
            f"teacher outputs {teacher_classes} classes, student outputs {student_classes}, "
            f"the data has {num_classes}",
            "give both models a head with as many outputs as the data has classes",
        )


def check_embedding_compatible(teacher: nn.Module, student: nn.Module, input_shape: InputsOrShape) -> None:
    """Refuse, before any training, models whose embeddings cannot be compared sample by sample.

    Both must return (batch, D) or (batch, L, D) tensors of the same shape: the loss and the
    validation cosine compare them element by element. Class counts do not matter here.
    """
    shapes = {}
    for role, model in (("teacher", teacher), ("student", student)):
        out = _probe_output(model, role, input_shape)
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3) or out.shape[0] != 2:
            raise ModelMismatchError(
                f"the {role} must return embeddings of shape (batch, D) or (batch, L, D), found {_shape_of(out)}"
            )
        shapes[role] = tuple(out.shape[1:])
    if shapes["teacher"] != shapes["student"]:
        raise ModelMismatchError(
            f"embedding shapes differ: teacher outputs (batch, {', '.join(map(str, shapes['teacher']))}), "
            f"student (batch, {', '.join(map(str, shapes['student']))})",
            "give the student an output of the teacher's embedding size",
        )


def _output_classes(model: nn.Module, role: str, input_shape: InputsOrShape) -> int:
    out = _probe_output(model, role, input_shape)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        raise ModelMismatchError(f"the {role} must return logits of shape (batch, classes), found {_shape_of(out)}")
    return int(out.shape[1])


def _shape_of(out: object) -> object:
    """A probe output for an error message: its shape, or its type when it is not a tensor."""
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def _probe_output(model: nn.Module, role: str, input_shape: InputsOrShape) -> object:
    """The model's output for a batch of 2 (the data's first samples, or zeros of a shape); a
    model that cannot take them: exit 2."""
    from edgedistill.data.inputs import describe, run

    # A batch of 2: BatchNorm in training mode refuses a batch of 1, and it catches models
    # exported with a fixed batch of 1.
    batch = torch.zeros((2, *input_shape)) if isinstance(input_shape, tuple) else input_shape
    was_training = model.training
    set_mode(model, training=False)
    try:
        with torch.no_grad():
            out = run(model, batch)
    except Exception as e:  # shape errors surface as RuntimeError, export guards as AssertionError
        found = (tuple(input_shape) if isinstance(input_shape, tuple) else describe(batch) if isinstance(batch, dict)
                 else f"{tuple(batch.shape[1:])} {str(batch.dtype).removeprefix('torch.')}")
        tensors = batch.values() if isinstance(batch, dict) else [batch]
        integer = any(not t.is_floating_point() for t in tensors)
        raise ModelMismatchError(
            f"the {role} cannot take the data's input shape {found} "
            f"(batch of 2): {_first_line(e)}",
            "integer data stays int64 (token ids); store x as float32 for a model that takes floats"
            if integer and ("dtype" in str(e).lower() or "long" in str(e).lower()) else
            "check the data spec, or export the model with a dynamic batch axis",
        ) from e
    finally:
        set_mode(model, training=was_training)
    return out
