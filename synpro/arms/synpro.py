"""SynPro: organic plus GRPO-trained rephrase and reformat sets, refreshed when pretraining plateaus.

The recipe (method.md §2), one pretraining stage per round:

- round 0 trains on organic text until the refresh schedule says stop (`refresh`: a plateau of the
  validation loss, or a fixed token count); with `initial_sets: true` (as the authors' release did),
  on organic plus a first generation of sets made by generators GRPO-trained before pretraining (no
  probe yet, so no influence reward: the `refresh: false` generators, shared with such an arm);
- a refresh probes θ → θ′ where the round ended, GRPO-trains one generator per operation (from the
  base model, or from the last round's when `grpo.init: previous`, the initial ones included), rewrites
  the pool with each, and continues pretraining from θ — model, optimizer and step — on organic plus
  every set made so far (`pool: latest` keeps only the newest), under the same total budget T; a
  refresh whose generator is one the arm already has (no influence, `grpo.init: base`: the same GRPO
  run) brings the same set, which the pool holds once;
- after `refresh.max_rounds` refreshes the last round runs to T.

Replicates share their data: a refresh probes the data seed's run (`experiment.data_seed`) where its
round ended, so its generators and sets are made once and every training seed continues from its own
θ on them (under a plateau schedule a seed may refresh at another point than the run it shares with).

Ablations are options, not code paths: `influence: false` drops the influence reward (no probe; the
authors' earlier RePro recipe), `refresh: false` trains the generators once before pretraining
(static generators: no probe, so no influence reward), `operations: [rephrase]` keeps one
operation, `pool: latest` the newest sets only. The `prompted` arm stays the untrained baseline.
`synthetic_share` (any synthetic arm) fixes the share of each round's tokens drawn from its sets;
`refresh_operations` names the operations a refresh retrains (the release: reformat only).
"""

from typing import Literal

from pydantic import Field, model_validator

from synpro.arms.base import ARMS
from synpro.arms.synthetic import SyntheticArm, SyntheticOptions


class SynProOptions(SyntheticOptions):
    operations: list[str] = Field(default_factory=lambda: ["rephrase", "reformat"], min_length=1)
    refresh: bool = True
    influence: bool = True
    pool: Literal["cumulative", "latest"] = "cumulative"
    # Round 0 trains on organic plus sets made by generators GRPO-trained before pretraining (no influence).
    initial_sets: bool = False
    # The operations a refresh retrains and rewrites with (default: all); the authors' released refreshes
    # retrain the reformat generator only, the initial rephrase set staying in the pool.
    refresh_operations: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _refreshed_are_operations(self) -> "SynProOptions":
        extra = set(self.refresh_operations or []) - set(self.operations)
        if extra:
            raise ValueError(f"refresh_operations {sorted(extra)} are not among operations {self.operations}")
        return self


@ARMS.register("synpro")
class SynPro(SyntheticArm):
    Options = SynProOptions

    def build(self, graph):
        """Static generators: trained once on the base model, no probe (and so no influence reward)."""
        sets = {op: graph.synthetic(op, generator=graph.grpo(op, influence=False)) for op in self.operations()}
        return graph.pretrain(sets, label=self.name, synthetic_share=self.options.synthetic_share)

    def rounds(self, graph):
        if not self.options.refresh:
            yield self.build(graph)
            return
        refresh, share = graph.spec.refresh, self.options.synthetic_share
        sets: dict = {}
        generators: dict = {}
        if self.options.initial_sets:  # the static arm's generators and sets (same keys)
            for op in self.operations():
                generators[op] = graph.grpo(op, influence=False)
                sets[f"{op}-r0"] = graph.synthetic(op, generator=generators[op])
        # Refreshes probe the data seed's run (its twin here), so every training seed trains on the same
        # sets and replicates differ only in pretraining; with one seed the twin is the stage itself.
        twin_graph = graph.data_seeded()
        stage = graph.pretrain(sets, label=self.name, stop=refresh.stop(0), synthetic_share=share)
        twin = twin_graph.pretrain(sets, label=self.name, stop=refresh.stop(0), synthetic_share=share)
        result = yield stage
        round_ = 0
        while result.stopped_early and round_ < refresh.max_rounds:
            round_ += 1
            probe = twin_graph.probe(twin, label=f"{self.name}-r{round_}") if self.options.influence else None
            new = {}
            for op in self.options.refresh_operations or self.operations():
                generators[op] = graph.grpo(op, probe=probe, previous=generators.get(op),
                                            influence=self.options.influence)
                new[f"{op}-r{round_}"] = graph.synthetic(op, generator=generators[op])
            if self.options.pool == "cumulative":
                held = {s.key for s in sets.values()}
                sets = {**sets, **{name: s for name, s in new.items() if s.key not in held}}
            else:
                sets = new
            stage = graph.pretrain(sets, label=self.name, parent=stage, stop=refresh.stop(round_),
                                   synthetic_share=share)
            twin = twin_graph.pretrain(sets, label=self.name, parent=twin, stop=refresh.stop(round_),
                                       synthetic_share=share)
            result = yield stage
