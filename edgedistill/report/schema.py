"""A typed model of `edgedistill.results/3`: what gate, compare and the reports read.

A results file is input like any other: a file with the right schema tag but the wrong
structure must be a usage error naming the field (exit 2), never a KeyError deep inside a
renderer (exit 3). Only what is read is modelled, strictly typed (no "10" for 10); every block
allows extra keys, so a writer can add fields within a version (docs/results-schema.md) without
breaking readers. Fields that are read are required; optional blocks (a skipped artifact has no
`warm`) may be absent or null. The model only validates: readers keep working on the dicts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgedistill.config import BudgetTable

Status = Literal["ok", "invalid", "inconclusive", "error", "skipped"]
Outcome = Literal["PASS", "FAIL", "INVALID", "INCONCLUSIVE"]
# A count or size that readers do arithmetic with: an integer of any length would overflow a float.
Count = Annotated[int, Field(ge=0, le=2**53)]


class _Block(BaseModel):
    # NaN stays allowed: the probe records NaN where /proc is unreadable.
    model_config = ConfigDict(strict=True, extra="allow")


class Stat(_Block):
    median: float | None = None
    min: float | None = None
    max: float | None = None
    n: Count | None = None


class ColdRun(_Block):
    total_ms: float | None = None
    interpreter_ms: float | None = None
    import_ms: float | None = None
    read_ms: float | None = None
    compile_ms: float | None = None
    first_inference_ms: float | None = None


class ColdRuns(_Block):
    runs: list[ColdRun] = []
    total_ms: Stat | None = None
    interpreter_ms: Stat | None = None
    import_ms: Stat | None = None
    read_ms: Stat | None = None
    compile_ms: Stat | None = None
    first_inference_ms: Stat | None = None


class Cache(_Block):
    mechanism: str | None = None
    error: str | None = None
    miss: ColdRuns | None = None
    hit: ColdRuns | None = None
    saving_ms: float | None = None
    saving_pct: float | None = None


class Cold(ColdRuns):
    kind: str | None = None
    kind_detail: str | None = None
    cache: Cache | None = None


class Summary(_Block):
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    p90_early_stopping_ms: float | None = None
    throughput_per_s: float | None = None


class Warm(_Block):
    samples_ms: list[float]
    summary: Summary
    duration_s: float | None = None
    loop_overhead_ms: float | None = None
    harness_overhead_ms: float | None = None


class SweepPoint(_Block):
    threads: Count
    batch_size: Count
    status: str
    detail: str | None = None
    summary: Summary | None = None
    samples_per_s: float | None = None
    samples_ms: list[float] | None = None


class Problem(_Block):
    kind: str
    detail: str


class Conditions(_Block):
    load_average_before: list[float] | None = None
    usable_cores: Count | None = None


class Accuracy(_Block):
    top1: float | None = None
    teacher_agreement: float | None = None


class MetricValue(_Block):
    """One metric of the task on one artifact (quality.py): higher is better; drop = teacher - value."""

    value: float | None = None
    teacher: float | None = None
    drop: float | None = None
    measured: bool
    reason: str | None = None
    n: Count | None = None


class Quality(MetricValue):
    """The run's metric ("top1", "cosine", "recall@10" or "pkg.mod:fn") and every metric of the
    task under `metrics` (an embedding's cosine and recall@10 whichever is primary)."""

    metric: str
    metrics: dict[str, MetricValue] = {}


class ReferenceQuality(_Block):
    metric: str
    teacher: float | None = None
    metrics: dict[str, float | None] = {}
    n: Count | None = None


class Memory(_Block):
    peak_rss_mb: float | None = None


class Result(_Block):
    artifact: str
    role: Literal["student", "teacher"]
    precision: str
    backend: str
    path: str | None
    size_bytes: Count | None
    threads: Count
    status: Status
    status_detail: str
    problems: list[Problem]
    conditions: Conditions | None = None
    cold: Cold | None = None
    warm: Warm | None = None
    accuracy: Accuracy | None = None
    quality: Quality | None = None
    memory: Memory | None = None
    sweep: list[SweepPoint] | None = None


class Target(_Block):
    name: str
    device: str
    threads: Count
    runner: str | None = None
    budgets: BudgetTable
    results: list[Result]


class Check(_Block):
    target: str
    artifact: str
    budget: str
    limit: float
    value: float | None
    outcome: Outcome
    detail: str


class Environment(_Block):
    tool_version: str | None = None
    cpu_model: str | None = None
    logical_cores: Count | None = None
    usable_cores: Count | None = None
    governor: str | None = None
    load_average: list[float] | None = None
    versions: dict[str, str | None] | None = None


class Reference(_Block):
    teacher_top1: float | None = None
    test_samples: Count | None = None
    quality: ReferenceQuality | None = None


class Missing(_Block):
    target: str
    artifact: str


class RunSummary(_Block):
    speedups: list[str] = []


class ResultsFile(_Block):
    # `schema` itself is checked before the model (load_results), so an older file gets its hint.
    created: str
    run: str
    environment: Environment
    reference: Reference
    targets: list[Target]
    verdict: Outcome | None
    checks: list[Check]
    summary: RunSummary | None = None
    complete: bool
    missing: list[Missing]
    interrupted: str | None

    @model_validator(mode="after")
    def _complete_means_nothing_missing(self) -> ResultsFile:
        if self.complete and self.missing:
            raise ValueError("a file marked complete cannot list missing artifacts")
        return self

