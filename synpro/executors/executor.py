"""The executor interface: where the process that holds a stage's lock runs (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from synpro.executors.base import Resources

if TYPE_CHECKING:
    from synpro.spec import Spec
    from synpro.stages.base import Stage, StageContext
    from synpro.stages.runner import Runner


class Executor:
    """Where the process that holds a stage's lock runs, and with what.

    `remote(stage)` False: the runner runs the stage in this process (`launch`: directly, or its ranks
    under torchrun). True: `run_remote` starts (or re-attaches to) a job that runs the stage with its
    own runner and returns once the stage's manifest exists; the runner then loads it as any finished
    stage. The lock and the manifest are the whole protocol between them.
    """

    name = "inline"

    def __init__(self, spec: "Spec | None" = None, *, resources: Resources | None = None,
                 poll_seconds: float = 1.0):
        self.spec = spec
        self.fixed = resources  # one stage's resources, in that stage's own job process
        self.poll_seconds = spec.executor.poll_seconds if spec is not None else poll_seconds

    def resources(self, stage: "Stage") -> Resources:
        return self.fixed or Resources.of(self.spec, stage.kind)

    def remote(self, stage: "Stage") -> bool:
        return False

    def describe(self, stage: "Stage") -> str:
        """How this executor launches the stage, for `synpro plan`."""
        return self.name + ("+torchrun" if self.resources(stage).processes > 1 else "")

    def launch(self, stage: "Stage", ctx: "StageContext", root: Path) -> dict[str, Any]:
        """Run the stage's work in the process that holds its lock."""
        from synpro.executors.torchrun import run_ranks

        resources = self.resources(stage)
        if resources.processes > 1:
            return run_ranks(stage, ctx, root, resources, poll_seconds=self.poll_seconds)
        return stage.run(ctx)

    def run_remote(self, runner: "Runner", stage: "Stage", callbacks: list) -> None:
        raise NotImplementedError
