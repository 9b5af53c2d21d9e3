"""Executors: where and with what a stage runs, never what it computes.

    stages/      what a stage computes: kind, version, config, inputs, run(ctx) -> metrics
    executors/   how it is launched: inline | subprocess | slurm (submitit); torchrun for its ranks

The runner's lock and `_stage.json` stay the only protocol: a stage finished by any executor is
finished for all, and neither the executor nor the resources are part of any stage key (a stage
trained on a cluster is reused by a laptop's sweep and the other way round).

- inline: in the sweep process (the default without CUDA, and in most tests);
- subprocess: a fresh Python per stage (the default with CUDA: its GPU memory is returned when it
  ends), with the GPUs it asks for (`synpro.executors.local`);
- slurm: a Slurm job per stage through submitit, re-attached to by a restarted sweep
  (`synpro.executors.slurm`);
- any of them runs a stage with `processes > 1` as that many torchrun ranks
  (`synpro.executors.torchrun`).

Gaps, stated: one node per stage (no multi-node torchrun yet); stages of one trial run one after
another (the runner is not yet driven by a ready-queue); a done stage whose files fail their
integrity check is rebuilt in the sweep process, whatever the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synpro.executors.base import Resources, StageFailed, job_history, read_job
from synpro.executors.executor import Executor

if TYPE_CHECKING:
    from synpro.spec import Spec

KINDS = ("local", "slurm", "inline", "subprocess")  # what `synpro sweep --executor` takes


def with_kind(spec: "Spec", kind: str | None) -> "Spec":
    """The spec with `--executor KIND` applied: local/slurm set `executor.kind`; inline/subprocess are
    the local executor in that mode."""
    if not kind:
        return spec
    if kind in ("inline", "subprocess"):
        return spec.with_params({"executor.kind": "local", "executor.mode": kind})
    return spec.with_params({"executor.kind": kind})


def make_executor(spec: "Spec") -> Executor:
    """The executor a spec asks for (`auto`: inline without CUDA, a subprocess per stage with it)."""
    if spec.executor.kind == "slurm":
        from synpro.executors.slurm import SlurmExecutor

        return SlurmExecutor(spec)
    from synpro.executors.local import InlineExecutor, SubprocessExecutor

    mode = spec.executor.mode
    if mode == "auto":
        mode = "subprocess" if _cuda() else "inline"
    return SubprocessExecutor(spec) if mode == "subprocess" else InlineExecutor(spec)


def _cuda() -> bool:
    from synpro.executors.local import visible_gpus

    return bool(visible_gpus())


__all__ = ["Executor", "KINDS", "Resources", "StageFailed", "job_history", "make_executor", "read_job", "with_kind"]
