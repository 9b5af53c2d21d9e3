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

`executor.parallel: N` (`synpro sweep --parallel N`) runs up to N stages of a trial at once: the
arms' ready inputs, then the arms side by side, each stage in its own process or job (threads in
the sweep process only wait for them; the runner's per-key lock runs a shared stage once).

Gaps, stated: one node per stage (no multi-node torchrun yet); parallelism is per arm (an arm's own
rounds stay in order), not a general ready-queue over every stage; a done stage whose files fail
their integrity check is rebuilt in the sweep process, whatever the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synpro.executors.base import Resources, StageFailed, job_history, read_job
from synpro.executors.executor import Executor

if TYPE_CHECKING:
    from synpro.spec import Spec

KINDS = ("local", "slurm", "inline", "subprocess")  # what `synpro sweep --executor` takes


def with_kind(spec: "Spec", kind: str | None, parallel: int | None = None) -> "Spec":
    """The spec with `--executor KIND` and `--parallel N` applied: local/slurm set `executor.kind`;
    inline/subprocess are the local executor in that mode. A combination the spec refuses (inline
    with parallel stages) is bad input, exit 2."""
    from pydantic import ValidationError

    from synpro.errors import InputError

    params: dict = {}
    if kind in ("inline", "subprocess"):
        params = {"executor.kind": "local", "executor.mode": kind}
    elif kind:
        params = {"executor.kind": kind}
    if parallel is not None:
        params["executor.parallel"] = parallel
    if not params:
        return spec
    try:
        return spec.with_params(params)
    except ValidationError as exc:
        raise InputError.one(f"bad command-line option: {exc.errors()[0]['msg']}", file=spec.source_file,
                             key="executor") from None


def make_executor(spec: "Spec") -> Executor:
    """The executor a spec asks for (`auto`: inline without CUDA, a subprocess per stage with it)."""
    if spec.executor.kind == "slurm":
        from synpro.executors.slurm import SlurmExecutor

        return SlurmExecutor(spec)
    from synpro.executors.local import InlineExecutor, SubprocessExecutor

    mode = spec.executor.mode
    if mode == "auto":  # stages at once need a process each (in-process ones would share torch's RNG)
        mode = "subprocess" if _cuda() or spec.executor.parallel > 1 else "inline"
    return SubprocessExecutor(spec) if mode == "subprocess" else InlineExecutor(spec)


def _cuda() -> bool:
    from synpro.executors.local import visible_gpus

    return bool(visible_gpus())


__all__ = ["Executor", "KINDS", "Resources", "StageFailed", "job_history", "make_executor", "read_job", "with_kind"]
