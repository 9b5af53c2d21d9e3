"""What a stage is: a kind, a version, a config, named inputs (other stages), and a `run`.

A stage's key is `stable_hash(kind, version, config, {input name: input key})` — nothing else —
so keys flow down the graph: a stage changes exactly when its own config or something upstream
changes, and two trials (or arms) that need the same stage share one folder. Runtime knobs that
do not change the output (batch sizes for generation, progress bars, callbacks that only observe)
stay out of the config and travel in `StageContext`.

A subclass sets `kind` and `version`, registers itself in `STAGES`, implements `run` (do the work
in `ctx.folder`, resuming whatever a killed attempt left there, and return metrics) and `load`
(the typed output of a finished folder). The runner (`synpro.stages.runner`) does the rest: lock,
skip when done, verify, write the manifest last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from synpro.core.hashing import stable_hash
from synpro.registry import Registry


@dataclass
class StageContext:
    """What a running stage may use besides its config: its folder, its inputs' outputs, observers."""

    folder: Path
    inputs: Mapping[str, Any]
    progress: bool = True
    callbacks: list[Any] = field(default_factory=list)


class Stage:
    kind: ClassVar[str]
    version: ClassVar[int] = 1
    # Whether `run` may be called on every rank of a torchrun group (rank 0 writing the files), so that
    # `resources.<kind>.processes > 1` is allowed (synpro.executors).
    distributed: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], inputs: Mapping[str, "Stage"] | None = None, *,
                 label: str = ""):
        self.config = dict(config)
        self.inputs = dict(inputs or {})
        self.label = label  # a readable name for folders and tables (e.g. the arm); not in the key
        self.key = stable_hash(self.kind, self.version, self.config, {n: s.key for n, s in self.inputs.items()})

    @property
    def dirname(self) -> str:
        return f"{self.kind}-{self.key}"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Do the work inside ctx.folder (resuming a killed attempt where the stage can); return metrics."""
        raise NotImplementedError

    def load(self, folder: Path, inputs: Mapping[str, Any]) -> Any:
        """The output of a finished stage folder."""
        raise NotImplementedError

    def observe(self, folder: Path, callbacks: list[Any], seen: dict[str, Any]) -> None:
        """While another process runs this stage, tell `callbacks` what it has done so far (read from
        `folder`; `seen` is this watcher's own memory between calls). Default: nothing to tell."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "label": self.label,
                "inputs": {n: s.key for n, s in self.inputs.items()}}

    def __repr__(self) -> str:
        return f"<{self.kind} {self.key}{' ' + self.label if self.label else ''}>"


STAGES: Registry[type[Stage]] = Registry("stage")
