"""SynPro: organic plus GRPO-trained rephrase and reformat sets, refreshed when pretraining plateaus.

The recipe (method.md §2), one pretraining stage per round:

- round 0 trains on organic text until the refresh schedule says stop (`refresh`: a plateau of the
  validation loss, or a fixed token count);
- a refresh probes θ → θ′ where the round ended, GRPO-trains one generator per operation (from the
  base model, or from the last round's when `grpo.init: previous`), rewrites the pool with each, and
  continues pretraining from θ — model, optimizer and step — on organic plus every set made so far
  (`pool: latest` keeps only the newest), under the same total budget T;
- after `refresh.max_rounds` refreshes the last round runs to T.

Ablations are options, not code paths: `influence: false` drops the influence reward (no probe; the
authors' earlier RePro recipe), `refresh: false` trains the generators once before pretraining
(static generators: no probe, so no influence reward), `operations: [rephrase]` keeps one
operation, `pool: latest` the newest sets only. The `prompted` arm stays the untrained baseline.
"""

from typing import Literal

from pydantic import Field

from synpro.arms.base import ARMS
from synpro.arms.synthetic import SyntheticArm, SyntheticOptions


class SynProOptions(SyntheticOptions):
    operations: list[str] = Field(default_factory=lambda: ["rephrase", "reformat"], min_length=1)
    refresh: bool = True
    influence: bool = True
    pool: Literal["cumulative", "latest"] = "cumulative"


@ARMS.register("synpro")
class SynPro(SyntheticArm):
    Options = SynProOptions

    def build(self, graph):
        """Static generators: trained once on the base model, no probe (and so no influence reward)."""
        sets = {op: graph.synthetic(op, generator=graph.grpo(op, influence=False)) for op in self.operations()}
        return graph.pretrain(sets, label=self.name)

    def rounds(self, graph):
        if not self.options.refresh:
            yield self.build(graph)
            return
        refresh = graph.spec.refresh
        stage = graph.pretrain({}, label=self.name, stop=refresh.stop(0))
        result = yield stage
        sets: dict = {}
        generators: dict = {}
        round_ = 0
        while result.stopped_early and round_ < refresh.max_rounds:
            round_ += 1
            probe = graph.probe(stage, label=f"{self.name}-r{round_}") if self.options.influence else None
            new = {}
            for op in self.operations():
                generators[op] = graph.grpo(op, probe=probe, previous=generators.get(op),
                                            influence=self.options.influence)
                new[f"{op}-r{round_}"] = graph.synthetic(op, generator=generators[op])
            sets = {**sets, **new} if self.options.pool == "cumulative" else new
            stage = graph.pretrain(sets, label=self.name, parent=stage, stop=refresh.stop(round_))
            result = yield stage
