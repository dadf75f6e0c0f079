"""Pydantic models of edgedistill.toml and targets/*.toml.

Unknown keys are errors with a did-you-mean; units live in key names (p90_ms, size_mb).
Building a config has no side effects: nothing is loaded, nothing imported beyond pydantic.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

# A static table of names and module paths: importing it imports no runtime.
from edgedistill.backends.base import BACKENDS
from edgedistill.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Precision = Literal["fp32", "fp16", "int8"]
Int8Fallback = Literal["entropy", "percentile", "float_nodes", "accuracy_control", "qat"]
INT8_FALLBACKS = get_args(Int8Fallback)  # the default order: cheapest first, training last
BackendName = Literal[tuple(BACKENDS)]  # a misspelt backend is a config error, not a silent no-op
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


def _no_nul(path: Path) -> Path:
    if "\0" in str(path):  # the OS would refuse it later, with a ValueError instead of a config error
        raise ValueError("a path cannot hold a NUL character")
    return path


# Strict mode refuses "10" for a number, but a path in TOML can only be a string: take it.
FilePath = Annotated[Path, Field(strict=False), AfterValidator(_no_nul)]
Share = Annotated[float, Field(ge=0, le=1)]  # agreement, cosine thresholds: a share of 1

RUN_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
RUN_NAME_MAX = 100
MAX_THREADS = 4096  # runtimes take an int32 thread count; far beyond that is a typo, not a machine


class Strict(BaseModel):
    # strict: numbers must be numbers ("10" or "10ms" is an error, not 10.0; true is not 1);
    # an int still passes where a float is expected (TOML `p90_ms = 2`).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)


def _folder_name(name: str) -> str:
    """A name used as one folder under out_dir: never a path, never hidden, never empty."""
    bad = sorted(set(name) - RUN_NAME_CHARS)
    if not name or len(name) > RUN_NAME_MAX or name.startswith(".") or bad:
        why = ("it is empty" if not name else f"it is {len(name)} characters long" if len(name) > RUN_NAME_MAX
               else "it starts with '.'" if name.startswith(".") else f"it holds {''.join(bad[:10])!r}")
        raise ValueError(f"a name of a folder under out_dir, not a path: letters, digits and '-_.', "
                         f"not starting with '.', at most {RUN_NAME_MAX} characters; {why}")
    return name


# Run and target names become folders (runs/<run>/bench/<target>): "/abs", "../x" or "a/b"
# would write elsewhere.
FolderName = Annotated[str, AfterValidator(_folder_name)]


class RunConfig(Strict):
    name: FolderName = "default"
    out_dir: FilePath = Path("runs")
    seed: int = Field(0, ge=0, le=2**32 - 1)  # the range numpy and scikit-learn accept


class TeacherConfig(Strict):
    # "pkg.mod:factory", a torch.export ".pt2", an ".onnx" (a black box run by ONNX Runtime) or
    # "hf:<folder>"; the default is the built-in digits teacher.
    spec: str = "edgedistill.zoo:digits_teacher"
    weights: FilePath | None = None  # safetensors, or a state_dict .pt loaded with weights_only=True
    # The sha256 of a model file the user trusts to run code when loaded (a .pt2 program, a
    # pickled checkpoint): that exact file is loaded; any other such file is refused (exit 6).
    trust_sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    # A classifier teacher that scores at chance on its own held-out data stops the run (wrong
    # weights or preprocessing, usually); true lets it go on.
    allow_weak_teacher: bool = False


class StudentConfig(Strict):
    # "pkg.mod:factory", or derived from the teacher: "prune:<width>", "shallow:<k>".
    spec: str = "edgedistill.zoo:digits_student"
    weights: FilePath | None = None
    trust_sha256: str | None = Field(None, pattern=SHA256_PATTERN)  # as in [teacher]


class DataConfig(Strict):
    # "builtin:digits", a ".npz" with x and y, or "pkg.mod:factory" returning a torch Dataset.
    spec: str = "builtin:digits"
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    label_fraction: float = Field(1.0, ge=0, le=1)  # share of training labels kept


class FeaturePair(Strict):
    """A hint-distillation pair: module paths as in model.named_modules()."""

    student: str
    teacher: str
    weight: float = Field(1.0, gt=0)  # this pair's MSE is multiplied by it and added to the loss


class DistillConfig(Strict):
    epochs: int = Field(12, ge=1)
    # None = chosen by what the student is (distill/defaults.py): 3e-3 and 64 for a student
    # trained from scratch, 1e-3 and 32 for one starting from a pretrained transformer.
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1)  # weight of cross-entropy on labels; 1 - alpha on KD
    # torch threads during training; None = torch default
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    # Hint pairs: MSE between named module outputs (through a learned adapter where widths
    # differ), added to the logit loss; empty = logits only. The teacher then runs live.
    features: list[FeaturePair] = []
    # Checkpoint every N optimizer steps as well as at each epoch's end; None = epoch ends only.
    checkpoint_every_steps: int | None = Field(None, ge=1)
    # Clip the global gradient norm before each step; None = no clipping. 5.0: on built-in digits
    # the unclipped per-epoch maxima are 5-11 (KD gradients carry the T^2 factor) and clipping at
    # 5 leaves validation accuracy unchanged (70/89/92 % over 3 epochs either way), while a spike
    # (a bad batch, a too-high lr) can no longer throw the weights far away.
    grad_clip_norm: float | None = Field(5.0, gt=0)
    # Stop after this many epochs without a better validation accuracy; None = run every epoch.
    patience: int | None = Field(None, ge=1)
    # Teacher logits for the training set computed once and reused; False runs the teacher on
    # every batch (needed once augmentation changes the inputs).
    cache_teacher: bool = True
    # Input augmentation, applied in order to each batch before student and teacher see it:
    # "shift:<pixels>", "noise:<std>" or "pkg.mod:factory" (see distill/augment.py). The teacher
    # then labels inputs it never saw, so it runs live on every batch (no cache).
    augment: list[str] = []
    restart: bool = False  # ignore an existing checkpoint of this run and train from the start
    # What the models output: class scores (Hinton KD on logits, validated by top-1 accuracy) or
    # an embedding (MSE + cosine to the teacher's vectors, validated by mean cosine similarity).
    objective: Literal["logits", "embedding"] = "logits"
    # Embedding terms. 1.0 each: MSE keeps the vectors' scale (consumers that use dot products or
    # distances need it), cosine their direction (what retrieval ranks by); 0 turns a term off.
    embedding_mse_weight: float = Field(1.0, ge=0)
    embedding_cosine_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _embedding_loss_not_empty(self) -> DistillConfig:
        if self.embedding_mse_weight + self.embedding_cosine_weight <= 0:
            # The error formatter appends the values found.
            raise ValueError("embedding_mse_weight + embedding_cosine_weight must be > 0 (else nothing is learned)")
        return self


class PruneConfig(Strict):
    """[compress.prune]: structured channel pruning of the distilled student (torch-pruning),
    then a distillation fine-tune from the teacher to recover (compress/prune.py)."""
    ratio: float | None = Field(None, gt=0, lt=1)  # share of every prunable layer's output channels removed
    layers: dict[str, Annotated[float, Field(gt=0, lt=1)]] = {}  # per-layer ratios, by module name
    importance: Literal["magnitude", "taylor"] = "magnitude"  # L2 norm, or |weight x gradient| of the KD loss
    recovery_epochs: int = Field(8, ge=0)  # distillation epochs after pruning; 0: none (3 left the built-in student 2.8 points down at 50 %, 8 none)

    @model_validator(mode="after")
    def _something_to_prune(self) -> PruneConfig:
        if self.ratio is None and not self.layers:
            raise ValueError("set ratio (e.g. 0.5) or layers (module name -> ratio): nothing would be pruned")
        return self


class CompressConfig(Strict):
    precisions: list[Precision] = ["fp32", "int8"]
    calibration_samples: int = Field(128, ge=1)
    # Top-1 points an INT8 artifact may lose against the FP32 student on the validation split
    # before the fallbacks below are tried (compress/accuracy.py measures it in the export).
    int8_max_drop_pt: float = Field(1.0, ge=0, le=100)
    # Tried in this order, each by the backends that have it, until one meets int8_max_drop_pt;
    # [] = the default post-training quantization only (docs/configuration.md lists who has what).
    int8_fallbacks: list[Int8Fallback] = list(INT8_FALLBACKS)
    # The "qat" fallback: epochs of quantization-aware training from the teacher (compress/qat.py).
    qat_epochs: int = Field(2, ge=1)
    prune: PruneConfig | None = None


class SearchConfig(Strict):
    """[search] (or `compress --search`): candidates = pruning ratios x precisions x backends,
    each measured on the targets; the most accurate one that meets every budget is chosen."""
    prune_ratios: list[Annotated[float, Field(gt=0, lt=1)]] = [0.25, 0.5, 0.75]  # the unpruned student is always tried
    importance: Literal["magnitude", "taylor"] = "magnitude"  # how each ratio is pruned, as in [compress.prune]
    recovery_epochs: int = Field(8, ge=0)  # and recovered
    precisions: list[Precision] | None = None  # default: [compress] precisions
    backends: list[BackendName] | None = None  # default: [export] backends
    first: bool = False  # stop at the first student form with a candidate that meets every budget
    max_candidates: int = Field(48, ge=1)  # candidates (student artifacts) measured at most
    max_time_s: float = Field(3600.0, gt=0)  # no new student form is started after this


class ExportConfig(Strict):
    backends: list[BackendName] = ["onnxruntime", "openvino", "executorch"]
    # Verification: exported outputs vs PyTorch on the same inputs. Past these it is an error.
    fp32_max_abs: float = Field(1e-3, gt=0)
    fp16_max_abs: float = Field(5e-2, gt=0)
    min_top1_agreement: dict[Precision, Share] = {"fp32": 0.99, "fp16": 0.98, "int8": 0.95}
    # For an embedding student (distill.objective = "embedding") there is no top-1: the mean
    # cosine similarity of exported vs PyTorch embeddings must reach this instead.
    min_cosine: dict[Precision, Share] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
    benchmark_teacher: bool = True  # export and bench the teacher too, as the reference
    # An artifact whose outputs differ from PyTorch beyond the tolerances above stops the export
    # (exit 2). True keeps it, marked unverified (verification.verified = false, with the
    # problems), so it is benchmarked and gated anyway, and its results say so.
    allow_unverified: bool = False


class BenchConfig(Strict):
    # A path, or the name of a profile shipped in targets/ ("local-cpu").
    targets: list[FilePath] = [Path("local-cpu")]
    # Evict model files from the page cache before each cold run, so the read is a disk read.
    cold_disk: bool = False


def _quality_spec(value: str) -> str:
    from edgedistill.quality import FORMS, valid_spec  # numpy and the standard library only

    if not valid_spec(value):
        raise ValueError(f"expected {FORMS}")
    return value


class Config(Strict):
    # The metric every artifact is scored and gated by (quality.py): "auto" (top-1 for
    # distill.objective = "logits", or agreement with the teacher when the data has no labels;
    # cosine for "embedding"), "top1", "agreement", "cosine", "recall@10", or
    # "pkg.mod:fn", a function fn(outputs, labels, teacher_outputs) -> float, higher is better.
    quality: Annotated[str, AfterValidator(_quality_spec)] = "auto"
    run: RunConfig = RunConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    search: SearchConfig = SearchConfig()  # a [search] table turns the search on, as --search does


# ---------------------------------------------------------------- targets


class Budgets(Strict):
    p90_ms: float | None = Field(None, gt=0)
    cold_start_ms: float | None = Field(None, gt=0)
    accuracy_drop_pt: float | None = Field(None, ge=0, le=100)  # top-1 points below the teacher
    # The run's quality metric (quality = ... in edgedistill.toml): at most this far below the
    # teacher, in the metric's own units (cosine 0.02, top-1 0.01 = 1 point), and at least this.
    quality_drop: float | None = Field(None, ge=0)
    min_quality: float | None = None
    size_mb: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)


class BudgetTable(Budgets):
    # Per-backend overrides, e.g. a Python ExecuTorch runtime whose cold start imports torch.
    overrides: dict[BackendName, Budgets] = {}

    def for_backend(self, backend: str) -> Budgets:
        base = self.model_dump(exclude={"overrides"})
        if backend in self.overrides:
            base.update(self.overrides[backend].model_dump(exclude_none=True))
        return Budgets(**base)


class Measurement(Strict):
    warmup_iterations: int = Field(20, ge=0)
    # Each warm run (one per fresh process) times at least this many iterations and seconds.
    min_iterations: int = Field(200, ge=1)
    min_duration_s: float = Field(0.5, ge=0)
    max_duration_s: float = Field(20.0, gt=0)
    # Fresh processes per student artifact (and per cache state). Each times its cold start and
    # a warm loop: the runs the regression gate compares (5 against 5 is the fewest with which a
    # one-sided rank test over runs can reach p < 0.01).
    cold_runs: int = Field(5, ge=1)
    timeout_s: float = Field(180.0, gt=0)  # per probe process
    # Cold start with the runtime's model cache, empty (miss) and filled (hit), where it has one.
    measure_cache: bool = True
    # Integrity: the same input repeated may not be faster than this share of varied inputs'
    # median (a cache answering), and outputs sampled during the latency run must match.
    caching_ratio: float = Field(0.75, gt=0, le=1)
    sampled_output_max_abs: float = Field(1e-3, ge=0)
    # Unstable conditions: a 1-minute load average above this many runnable tasks per usable
    # core before a run, or a CPU governor that lowers clocks, makes latency INVALID.
    max_load_per_core: float = Field(1.0, gt=0)
    # ... or other processes using more than this share of the machine's CPU during a warm run
    # (measured over the run; on a shared 2-core VM such runs moved by +25 % to +100 %).
    max_others_cpu_share: float = Field(0.1, gt=0, le=1)
    allow_unstable_clocks: bool = False
    # A Jetson whose clocks are not locked (`sudo jetson_clocks`; DVFS moves them under load):
    # its latency is INVALID, or measured with a recorded warning ("warn").
    unlocked_clocks: Literal["warn", "invalid"] = "invalid"

    @model_validator(mode="after")
    def _durations_ordered(self) -> Measurement:
        if self.min_duration_s > self.max_duration_s:
            raise ValueError(f"min_duration_s ({self.min_duration_s:g}) must not exceed "
                             f"max_duration_s ({self.max_duration_s:g})")
        return self


class Sweep(Strict):
    """Extra warm-latency points besides the target's own threads at batch 1."""

    threads: list[Annotated[int, Field(ge=1)]] = []
    batch_sizes: list[Annotated[int, Field(ge=1)]] = []


class SshTarget(Strict):
    """How the SSH runner reaches a device: the system OpenSSH client, so the user's ssh config,
    keys, agent, aliases and ProxyJump apply (bench/runners/ssh.py)."""

    host: Annotated[str, Field(min_length=1)]  # an alias from ~/.ssh/config, or [user@]host
    config: FilePath | None = None  # passed as `ssh -F` (CI keeps its keys and known_hosts there)
    port: int | None = Field(None, ge=1, le=65535)  # else the ssh config's (22)
    python: str = "python3"  # the interpreter on the device (Python >= 3.8, numpy, the runtime)
    workdir: str = "/tmp"  # where per-run folders are made, and the device lock lives
    connect_timeout_s: int = Field(10, ge=1)
    # A link that stops answering is declared lost after interval x count seconds (ssh's
    # ServerAliveInterval / ServerAliveCountMax): the bound on noticing a dropped device.
    alive_interval_s: int = Field(5, ge=1)
    alive_count_max: int = Field(3, ge=1)
    lock_wait_s: float = Field(600.0, ge=0)  # queue behind another job on the device this long
    # TensorRT engines are built on the device with its trtexec (JetPack: /usr/src/tensorrt/bin/trtexec,
    # found there when this is left "trtexec" and it is not on PATH).
    trtexec: str = "trtexec"


class AdbTarget(Strict):
    """How the adb runner reaches a phone (bench/runners/adb.py)."""

    serial: str | None = None  # `adb -s SERIAL`; else the only device attached
    adb: str = "adb"  # the client binary
    workdir: str = "/data/local/tmp/edgedistill"
    # The native ExecuTorch runner cross-built for the device (README: Android arm64 with the NDK).
    executorch_runner: FilePath | None = None
    # LiteRT's benchmark_model built for the device (Google's prebuilt Android arm64 binary): what
    # measures the target's .tflite artifacts (bench/benchmark_model.py).
    benchmark_model: FilePath | None = None
    big_cores_only: bool = True  # taskset to the cores with the highest maximum frequency
    max_cool_down_s: float = Field(120.0, ge=0)  # wait this long at most for the thermal status to drop
    max_thermal_status: int = Field(1, ge=0, le=6)  # Android's PowerManager THERMAL_STATUS_*: 1 = light
    lock_wait_s: float = Field(600.0, ge=0)


class TargetConfig(Strict):
    name: FolderName  # the file's stem unless given
    description: str = ""
    # Where the measurements run: this machine, a device over SSH, a phone over adb.
    runner: Literal["local", "ssh", "adb"] = "local"
    ssh: SshTarget | None = None
    adb: AdbTarget | None = None
    device: str = "CPU"
    backends: list[BackendName] = ["onnxruntime", "openvino", "executorch"]
    threads: int = Field(1, ge=1, le=MAX_THREADS)
    # Which program measures ExecuTorch: the native C++ runner (a device's real cold start, no
    # Python; built on first use, bench/native.py) or the Python runtime (which imports torch).
    executorch_runtime: Literal["native", "python"] = "native"
    # The platform the ort-mobile backend optimizes its .ort for (onnxruntime's converter's
    # --target_platform). Unset: this machine's for a local target (x86_64 -> amd64, aarch64 ->
    # arm), "arm" for an SSH or adb device (phones, Jetson, Raspberry Pi).
    ort_target_platform: Literal["arm", "amd64"] | None = None
    # A runtime that ran on another device or provider than `device` (ONNX Runtime falling back
    # to CPU, OpenVINO AUTO choosing CPU) makes the result INVALID unless this allows it.
    allow_fallback: bool = False
    measurement: Measurement = Measurement()
    sweep: Sweep = Sweep()
    budgets: BudgetTable = BudgetTable()

    @model_validator(mode="after")
    def _runner_has_its_table(self) -> TargetConfig:
        if self.runner in ("ssh", "adb") and getattr(self, self.runner) is None:
            example = 'host = "jetson"' if self.runner == "ssh" else 'serial = "R58M123ABC"'
            raise ValueError(f'runner = "{self.runner}" needs a [{self.runner}] table ({example}); found none')
        for other in ("ssh", "adb"):
            if other != self.runner and getattr(self, other) is not None:
                raise ValueError(f'a [{other}] table is only read with runner = "{other}"; '
                                 f'found it with runner = "{self.runner}"')
        return self


# ---------------------------------------------------------------- loading


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The model a field holds directly (Model or Model | None), else None."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if get_origin(ann) in (list, dict):
        return None
    inner = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return inner[0] if len(inner) == 1 else None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at `loc` (the parent of an unknown key), for did-you-mean hints."""
    current: Any = model
    item: Any = None  # the model inside a list/dict field; the next loc part is its index or key
    for part in loc:
        if item is not None:
            current, item = item, None
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        if (sub := _model_in(ann)) is not None:
            current = sub
            continue
        inner = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if get_origin(ann) not in (list, dict) or not inner:
            return []
        item = inner[-1]  # list[Model] or dict[str, Model], e.g. distill.features.0
    return [] if item is not None else list(getattr(current, "model_fields", {}))


def _field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, list[tuple[str, ...]]]:
    """Every key name -> the dotted paths where it is a field (through nested tables only)."""
    paths: dict[str, list[tuple[str, ...]]] = {}
    for name, field in model.model_fields.items():
        paths.setdefault(name, []).append(prefix + (name,))
        if (sub := _model_in(field.annotation)) is not None:
            for key, found in _field_paths(sub, prefix + (name,)).items():
                paths.setdefault(key, []).extend(found)
    return paths


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(map(str, loc))  # list items by index: distill.features.0.teacher


def _did_you_mean(paths: list[str]) -> str:
    return "did you mean " + " or ".join(repr(p) for p in paths) + "?"


def _likeness(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()  # "OpenVINO" is openvino


def _closest(word: str, choices: list[str], cutoff: float = 0.5) -> str | None:
    scored = [(_likeness(word, c), c) for c in choices]
    best = max(scored, default=(0.0, None))
    return best[1] if best[0] >= cutoff else None


def _unknown_key_hint(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """A key that is a field of another section names that section; else the closest name."""
    parent, key = loc[:-1], str(loc[-1])
    everywhere = _field_paths(model)
    elsewhere = [p for p in everywhere.get(key, []) if p != tuple(map(str, loc))]
    if elsewhere:
        depth = min(len(p) for p in elsewhere)
        return _did_you_mean([".".join(p) for p in elsewhere if len(p) == depth])
    known = _known_keys(model, parent)
    # A typo here, or a typo of a field that lives elsewhere (only when clearly closer).
    here = _closest(key, known)
    far = _closest(key, list(everywhere), cutoff=0.8)
    if far is not None and (here is None or _likeness(key, far) > _likeness(key, here)):
        return _did_you_mean([".".join(min(everywhere[far], key=len))])
    if here is not None:
        return _did_you_mean([_dotted(parent + (here,))])
    return f"valid keys here: {', '.join(known)}" if known else None


def _choices(error: dict) -> list[str]:
    # pydantic words a Literal's options as "'a', 'b' or 'c'"
    return re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))


def _shown(value: Any, limit: int = 60) -> str:
    """repr(value), cut short: an error line stays one readable line (10**400, a pasted blob)."""
    try:
        text = repr(value)
    except RecursionError:
        return "a value nested too deeply to show"
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text)} characters)"


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), type(value).__name__)


def _reported(err: ValidationError) -> dict:
    """The one error of several that the message is about."""
    errors = err.errors()
    # A misspelt required key gives "missing" and "extra" together; the extra one names the typo.
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    first = _reported(err)
    loc = tuple(first["loc"])
    kind, found = first["type"], first.get("input")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if kind == "extra_forbidden":
        return ConfigError(f"{source}: unknown key {_shown(_dotted(loc))}{more}", _unknown_key_hint(model, loc))
    if kind == "literal_error":
        choices = _choices(first)
        close = _closest(str(found), choices)
        options = ", ".join(choices)
        if loc and loc[-1] == "[key]":  # a key of a keyed table, e.g. budgets.overrides.<backend>
            table = loc[:-2]
            message = f"{source}: unknown key {_shown(_dotted(loc[:-1]))}; {_dotted(table)} takes the keys {options}"
            hint = _did_you_mean([_dotted(table + (close,))]) if close else None
        else:  # an item of a list, e.g. export.backends.1
            message = f"{source}: {_dotted(loc)}: expected one of {options}, found {_shown(found)}"
            hint = _did_you_mean([close]) if close else None
        return ConfigError(message + more, hint)
    path = _dotted(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return ConfigError(f"{source}: {path}: expected a table, found {_type_name(found)} ({_shown(found)}){more}",
                           f"write it as a [{path}] section" if path else None)
    message = first["msg"].removeprefix("Value error, ")  # our validators' own words
    hint = None
    if kind == "path_type":
        message = "expected a path (a string)"
    elif kind in ("float_type", "int_type", "bool_type") and isinstance(found, str):
        hint = ("write true or false, without quotes" if kind == "bool_type"
                else "write the number without quotes or units; the unit is in the key's name")
    elif kind in ("float_type", "int_type") and isinstance(found, bool):
        hint = "write a number, not true or false"
    return ConfigError(f"{source}: {path}: {message}, found {_shown(found)}{more}", hint)


MAX_TOML_BYTES = 4 * 2**20  # a config is a page of text; anything this big was not meant as one


def read_toml(path: Path, what: str = "config", hint: str | None = "check the path, or run without --config"
              ) -> dict[str, Any]:
    """The TOML document in `path`; any file that is not one is a ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: expected a TOML {what} file, found a directory")
    if not path.exists():
        raise ConfigError(f"{what} file not found: {path}", hint)
    if not path.is_file():  # a FIFO would block the read forever, /dev/zero never end
        raise ConfigError(f"{path}: expected a TOML {what} file, found a device, pipe or socket")
    try:
        size = path.stat().st_size
        if size > MAX_TOML_BYTES:
            raise ConfigError(f"{path}: expected a TOML {what} file of at most {MAX_TOML_BYTES // 2**20} MiB, "
                              f"found {size} bytes")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        found = "binary data" if b"\0" in raw else "bytes that are not UTF-8"
        raise ConfigError(f"{path}: expected a UTF-8 TOML {what} file, found {found} (at byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # duplicate keys land here too
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def validate(model: type[Strict], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise format_validation_error(e, model, source) from None
    except RecursionError:  # pydantic walks nested input recursively
        raise ConfigError(f"{source}: values nested too deeply") from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None,
                flags: dict[str, str] | None = None) -> Config:
    """Read edgedistill.toml (or defaults) and apply dotted-key overrides from CLI flags.

    `flags` names the flag behind each override key ("run.name": "--run-name"), so an error in
    a value given on the command line blames the flag, not the file.
    """
    source = str(path) if path else "config"
    data = read_toml(path) if path else {}
    applied = []
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for depth, p in enumerate(parents, 1):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # e.g. `distill = 3` in the file and --epochs on the line
                table = ".".join(parents[:depth])
                flag = (flags or {}).get(dotted, "a flag")
                raise ConfigError(f"{source}: {table}: expected a table, found {_type_name(node)} ({_shown(node)}), "
                                  f"and {flag} sets {dotted} inside it", f"write it as a [{table}] section")
        node[leaf] = value
        applied.append(dotted)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        where = _dotted(tuple(_reported(e)["loc"]))
        by_flag = next((d for d in applied if where == d or where.startswith(d + ".")), None)
        if by_flag is not None:
            source = (flags or {}).get(by_flag, source)
        raise format_validation_error(e, Config, source) from None
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None


CACHE_DIR_ENV = "EDGEDISTILL_CACHE_DIR"


def cache_dir(run: RunConfig) -> Path:
    """Where files keyed by their content go (the teacher's logits): $EDGEDISTILL_CACHE_DIR when
    set, so runs in fresh folders (a CI job, each test) share them, else out_dir/.cache. A hit
    is only ever a file whose key (teacher digest, data fingerprint) matches, so sharing is safe."""
    shared = os.environ.get(CACHE_DIR_ENV)
    return Path(shared) if shared else Path(run.out_dir) / ".cache"


def checked_run_dir(run: RunConfig) -> Path:
    """out_dir/name, after checking that nothing the run writes can land outside out_dir.

    The name is a plain name (RunConfig checks it), but a symlink can still lead out: the run
    folder or out_dir/.cache (the teacher cache), or a link already inside either, that points
    elsewhere is refused.
    """
    out = Path(run.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir {out}: expected a folder, found a file", "give --out-dir a folder")
    try:
        root = out.resolve()
        run_dir = out / run.name
        derived = [run_dir, out / ".cache"]
        for top in list(derived):
            if top.is_dir():  # os.walk does not follow the links it lists, so a loop ends too
                derived += [Path(folder) / n for folder, dirs, files in os.walk(top) for n in dirs + files
                            if (Path(folder) / n).is_symlink()]
        for path in derived:
            target = path.resolve()
            if not target.is_relative_to(root):
                raise ConfigError(f"{path} leads outside run.out_dir {out}: it resolves to {target}",
                                  "remove the symlink, or choose another --run-name or --out-dir")
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable folder
        raise ConfigError(f"run.out_dir {out}: cannot check where run {run.name!r} writes: {e}") from None
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: expected a run folder, found a file", "choose another --run-name")
    return run_dir


SHIPPED_TARGETS = Path(__file__).resolve().parent.parent / "targets"


def resolve_target(path: Path) -> Path:
    """A target file by path, or by the name of a shipped profile."""
    path = Path(path)
    shipped = SHIPPED_TARGETS / f"{path.name}.toml"
    if not path.is_file() and path.suffix == "" and shipped.is_file():
        return shipped
    return path


def load_target(path: Path) -> TargetConfig:
    path = resolve_target(path)
    names = sorted(p.stem for p in SHIPPED_TARGETS.glob("*.toml"))
    data = read_toml(path, "target", f"give a .toml path or a shipped profile: {', '.join(names)}")
    named = "name" in data
    data.setdefault("name", Path(path).stem)
    try:
        return validate(TargetConfig, data, str(path))
    except ConfigError as e:
        if not named and e.message.startswith(f"{path}: name:"):
            e.hint = f'the name defaults to the file\'s stem; set name = "..." in {Path(path).name}'
        raise
