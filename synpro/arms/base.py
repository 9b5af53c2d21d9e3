"""What an arm is: a recipe that emits the stages whose last one trains the arm's model.

An arm never runs anything: `build` asks the trial's `GraphBuilder` (synpro.stages.graph) for shared stages
(pools, the oracle's extra pool, synthetic sets) and returns its pretraining stage; an arm that trains
in rounds (SynPro's refresh loop) yields one pretraining stage per round from `rounds` instead. Stages are
deduplicated by key, so arms that need the same set share it, and dropping an arm changes no other
stage's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Generator

from pydantic import BaseModel, ConfigDict

from synpro.registry import Registry

if TYPE_CHECKING:
    from synpro.stages import Stage
    from synpro.stages.graph import GraphBuilder
    from synpro.training.result import TrainResult


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm:
    """Subclass, set `Options`, implement `build`, and register with `@ARMS.register("kind")`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    # The reference arm whose learning curve defines effective tokens (see synpro.effective).
    is_reference: ClassVar[bool] = False

    def __init__(self, name: str, options: BaseModel):
        self.name = name
        self.options = options

    def operations(self) -> list[str]:
        """Names of the synthetic sets (spec `generation.operations`) this arm trains on."""
        return []

    def build(self, graph: "GraphBuilder") -> "Stage":
        """The arm's pretraining stage (built from the graph's shared stages)."""
        raise NotImplementedError

    def rounds(self, graph: "GraphBuilder") -> Generator["Stage", "TrainResult", None]:
        """The arm's pretraining stages in order: each is yielded, run by the orchestrator, and its result
        sent back, so a later round can depend on where the previous one ended (a plateau). One round
        unless an arm says otherwise."""
        yield self.build(graph)


ARMS: Registry[type[Arm]] = Registry("arm")
