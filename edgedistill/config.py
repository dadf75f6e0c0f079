"""Pydantic models of edgedistill.toml and targets/*.toml.

Unknown keys are errors with a did-you-mean; units live in key names (p90_ms, size_mb).
Building a config has no side effects: nothing is loaded, nothing imported beyond pydantic.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgedistill.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Precision = Literal["fp32", "fp16", "int8"]
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunConfig(Strict):
    name: str = "default"
    out_dir: Path = Path("runs")
    seed: int = 0


class TeacherConfig(Strict):
    # "pkg.mod:factory", a torch.export ".pt2", an ".onnx" (a black box run by ONNX Runtime) or
    # "hf:<folder>"; the default is the built-in digits teacher.
    spec: str = "edgedistill.zoo:digits_teacher"
    weights: Path | None = None  # safetensors, or a state_dict .pt loaded with weights_only=True
    # The sha256 of a model file the user trusts to run code when loaded (a .pt2 program, a
    # pickled checkpoint): that exact file is loaded; any other such file is refused (exit 6).
    trust_sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    # A classifier teacher that scores at chance on its own held-out data stops the run (wrong
    # weights or preprocessing, usually); true lets it go on.
    allow_weak_teacher: bool = False


class StudentConfig(Strict):
    # "pkg.mod:factory", or derived from the teacher: "prune:<width>", "shallow:<k>".
    spec: str = "edgedistill.zoo:digits_student"
    weights: Path | None = None
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
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1)  # weight of cross-entropy on labels; 1 - alpha on KD
    threads: int | None = Field(None, ge=1)  # torch threads during training; None = torch default
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


class CompressConfig(Strict):
    precisions: list[Precision] = ["fp32", "int8"]
    calibration_samples: int = Field(128, ge=1)


class ExportConfig(Strict):
    backends: list[str] = ["onnxruntime", "openvino", "executorch"]
    # Verification: exported outputs vs PyTorch on the same inputs. Past these it is an error.
    fp32_max_abs: float = Field(1e-3, gt=0)
    fp16_max_abs: float = Field(5e-2, gt=0)
    min_top1_agreement: dict[Precision, float] = {"fp32": 0.99, "fp16": 0.98, "int8": 0.95}
    # For an embedding student (distill.objective = "embedding") there is no top-1: the mean
    # cosine similarity of exported vs PyTorch embeddings must reach this instead.
    min_cosine: dict[Precision, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
    benchmark_teacher: bool = True  # export and bench the teacher too, as the reference


class BenchConfig(Strict):
    # A path, or the name of a profile shipped in targets/ ("local-cpu").
    targets: list[Path] = [Path("local-cpu")]
    # Evict model files from the page cache before each cold run, so the read is a disk read.
    cold_disk: bool = False


class Config(Strict):
    run: RunConfig = RunConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()


# ---------------------------------------------------------------- targets


class Budgets(Strict):
    p90_ms: float | None = Field(None, gt=0)
    cold_start_ms: float | None = Field(None, gt=0)
    accuracy_drop_pt: float | None = Field(None, ge=0)  # top-1 points below the teacher
    size_mb: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)


class BudgetTable(Budgets):
    # Per-backend overrides, e.g. a Python ExecuTorch runtime whose cold start imports torch.
    overrides: dict[str, Budgets] = {}

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


class TargetConfig(Strict):
    name: str
    description: str = ""
    runner: Literal["local"] = "local"
    device: str = "CPU"
    backends: list[str] = ["onnxruntime", "openvino", "executorch"]
    threads: int = Field(1, ge=1)
    # A runtime that ran on another device or provider than `device` (ONNX Runtime falling back
    # to CPU, OpenVINO AUTO choosing CPU) makes the result INVALID unless this allows it.
    allow_fallback: bool = False
    measurement: Measurement = Measurement()
    sweep: Sweep = Sweep()
    budgets: BudgetTable = BudgetTable()


# ---------------------------------------------------------------- loading


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
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
            continue
        inner = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if get_origin(ann) not in (list, dict) or not inner:
            return []
        item = inner[-1]  # list[Model] or dict[str, Model], e.g. distill.features[0]
    return [] if item is not None else list(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    errors = err.errors()
    # A misspelt required key gives "missing" and "extra" together; the extra one names the typo.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))!r}?" if close else (
            f"valid keys here: {', '.join(known)}" if known else None
        )
        return ConfigError(f"{source}: unknown key {path!r}", hint)
    found = first.get("input")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return ConfigError(f"{source}: {path}: {first['msg']}, found {found!r}{more}")


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", "check the path, or run without --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:  # duplicate keys land here too
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def validate(model: type[Strict], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise format_validation_error(e, model, source) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read edgedistill.toml (or defaults) and apply dotted-key overrides from CLI flags."""
    data = read_toml(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(Config, data, str(path) if path else "config")


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
    if not path.is_file():
        names = sorted(p.stem for p in SHIPPED_TARGETS.glob("*.toml"))
        raise ConfigError(f"target file not found: {path}", f"give a .toml path or a shipped profile: {', '.join(names)}")
    data = read_toml(path)
    data.setdefault("name", Path(path).stem)
    return validate(TargetConfig, data, str(path))
