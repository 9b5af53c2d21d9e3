"""Measured usage: what each stage held while it ran, and what an arm's effective tokens cost.

A stage's manifest (`_stage.json`) records its `usage` when it finishes (synpro.stages.meter): wall
seconds over every attempt (a failed, interrupted or pre-empted attempt appends its time to `.usage.jsonl`,
a hidden file that is never one of the stage's outputs, so a resumed stage counts its whole cost; a
SIGKILLed one cannot), the device it held and how many (the GPUs it was given or the one it touched, else
its CPU cores), and device-hours = wall × devices (GPU-hours, or CPU core-hours). The process's own CPU
time is recorded beside it as a check on the core count. Usage is not part of any key:
where and how fast a stage ran never changes what it made.

An arm's ledger sums the usage of every stage its rounds read, transitively (pools, sets, generators,
probes, its evaluation): the cost of that arm run alone, so a stage two arms share is in both. A trial's
total counts each stage once. The cost per effective token gained over repetition is the arm's device-hours
beyond repetition's over the effective tokens it gained beyond repetition's, per million: what the gain cost
on top of what repetition spends anyway (null where it gained nothing or there is no repetition arm).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from synpro.stages.meter import UNITS
from synpro.stages.runner import read_manifest

if TYPE_CHECKING:
    from synpro.stages.base import Stage

def closure(stages: Iterable["Stage"]) -> list["Stage"]:
    """The stages and everything they read, each once."""
    seen: dict[str, "Stage"] = {}

    def visit(stage: "Stage") -> None:
        if stage.key in seen:
            return
        seen[stage.key] = stage
        for upstream in stage.inputs.values():
            visit(upstream)

    for stage in stages:
        visit(stage)
    return list(seen.values())


def usage(root: Path, stages: Iterable["Stage"]) -> dict[str, Any]:
    """Device-hours of these stages and all they read (from their manifests), in total and by kind;
    `unmeasured_stages` counts finished stages whose manifest predates the ledger (or unfinished ones)."""
    total = {unit: 0.0 for unit in UNITS.values()}
    by_kind: dict[str, dict[str, float]] = {}
    unmeasured = 0
    for stage in closure(stages):
        recorded = (read_manifest(Path(root) / stage.dirname) or {}).get("usage")
        if not recorded:
            unmeasured += 1
            continue
        kind = by_kind.setdefault(stage.kind, {unit: 0.0 for unit in UNITS.values()})
        for unit in UNITS.values():
            total[unit] += recorded.get(unit, 0.0)
            kind[unit] += recorded.get(unit, 0.0)
    return {**total, "usage_by_kind": by_kind, "unmeasured_stages": unmeasured}


def metrics(usage: dict[str, Any]) -> dict[str, float]:
    """A ledger as MLflow metrics: usage/gpu_hours, usage/cpu_core_hours."""
    return {f"usage/{unit}": usage[unit] for unit in UNITS.values() if unit in usage}


def _per_million_gained(arm: dict, repetition: dict) -> tuple[float | None, str | None]:
    """(extra device-hours over repetition per million effective tokens gained over it, its unit); (None,
    None) without a gain or a measurement."""
    unit = "gpu_hours" if (arm.get("gpu_hours") or 0) > 0 else "cpu_core_hours"
    mine, theirs = arm.get(unit), repetition.get(unit)
    d_eff, base = arm.get("effective_tokens"), repetition.get("effective_tokens")
    if None in (mine, theirs, d_eff, base) or d_eff <= base or _partly_measured(arm) or _partly_measured(repetition):
        return None, None
    return (mine - theirs) / ((d_eff - base) / 1e6), unit


def _partly_measured(values: dict) -> bool:
    """Whether some stage behind these values has no recorded usage (finished before the ledger existed):
    a difference of partial sums would be no cost at all."""
    seeds = values.get("per_seed", {}).values()
    return bool(values.get("unmeasured_stages") or any(v.get("unmeasured_stages") for v in seeds))


def add_costs(arms: dict[str, dict]) -> None:
    """Give each arm of one trial's results (and each of its seeds) `cost_per_m_effective_gained` in
    `cost_unit` (see the module docstring), beside repetition's; no-op without a repetition arm."""
    repetition = next((a for a in arms.values() if a.get("kind") == "repetition"), None)
    if repetition is None:
        return
    for arm in arms.values():
        arm["cost_per_m_effective_gained"], arm["cost_unit"] = _per_million_gained(arm, repetition)
        for seed, values in arm.get("per_seed", {}).items():
            base = repetition.get("per_seed", {}).get(seed)
            values["cost_per_m_effective_gained"], values["cost_unit"] = (
                _per_million_gained(values, base) if base else (None, None))


def study_costs(trials: list[dict], arm: str) -> dict[str, Any]:
    """An arm's device-hours and cost per gained effective tokens, means over a study's trials that have them."""
    rows = [t["arms"][arm] for t in trials if arm in t["arms"]]

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    units = {r.get("cost_unit") for r in rows if r.get("cost_per_m_effective_gained") is not None}
    return {"mean_gpu_hours": mean("gpu_hours"), "mean_cpu_core_hours": mean("cpu_core_hours"),
            "mean_cost_per_m_effective_gained": mean("cost_per_m_effective_gained") if len(units) <= 1 else None,
            "cost_unit": next(iter(units), None)}


def measured(arm: dict) -> bool:
    """Whether an arm of the results (or a compare row) has a measured ledger."""
    return any(arm.get(k) is not None for k in ("gpu_hours", "cpu_core_hours", "mean_gpu_hours", "mean_cpu_core_hours"))


def shown(hours: float | None, unit: str | None) -> str:
    """A device-hours cell: '0.0123 GPU-h' or '0.0123 core-h'."""
    if hours is None:
        return "-"
    return f"{hours:.3g} {'GPU-h' if unit == 'gpu_hours' else 'core-h'}"


def arm_hours(gpu_hours: float | None, cpu_core_hours: float | None) -> str:
    """An arm's device-hours cell: GPU-hours when it used any, else CPU core-hours."""
    return shown(gpu_hours, "gpu_hours") if gpu_hours else shown(cpu_core_hours, "cpu_core_hours")


NOTE = ("device-h: measured wall time x devices of every stage the arm read (a stage arms share counts in each); "
        "cost/M gained: its device-hours beyond repetition's per million effective tokens beyond repetition's")


def table(title: str, rows: list[tuple[list[str], dict]], labels: list[str], *, prefix: str = "") -> Any:
    """A rich table of the ledger: the given label cells, then device-hours and cost per M gained."""
    from rich.table import Table

    out = Table(title=title, title_justify="left", caption=NOTE, caption_justify="left")
    for label in labels:
        out.add_column(label)
    for column in ("device-h", "GPU-h", "CPU core-h", "cost/M gained"):
        out.add_column(column, justify="right")
    for cells, arm in rows:
        gpu, cpu = arm.get(prefix + "gpu_hours"), arm.get(prefix + "cpu_core_hours")
        out.add_row(*cells, arm_hours(gpu, cpu), "-" if gpu is None else f"{gpu:.4g}",
                    "-" if cpu is None else f"{cpu:.4g}",
                    shown(arm.get(prefix + "cost_per_m_effective_gained"), arm.get("cost_unit")))
    return out
