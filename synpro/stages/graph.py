"""The stages of one trial, built on demand and deduplicated by key: what arm recipes ask for."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from synpro.stages.base import Stage
from synpro.stages.evaltask import EvalTaskStage
from synpro.stages.evaluate import EvaluateStage
from synpro.stages.extra import ExtraStage
from synpro.stages.grpo import GrpoStage
from synpro.stages.pools import PoolsStage
from synpro.stages.pretrain import PretrainStage
from synpro.stages.probe import ProbeStage
from synpro.stages.synthesize import SynthesizeStage

if TYPE_CHECKING:
    from synpro.spec import Spec


def _seeded(spec: "Spec", seed: int) -> "Spec":
    """The spec as a stage reads it: `experiment.seed` is the one seed that stage uses."""
    return spec.model_copy(update={"experiment": spec.experiment.model_copy(update={"seed": seed})})


class GraphBuilder:
    """Hands arms the trial's shared stages, each built once.

    Data stages (pools, extra, synthetic sets, task data, and the GRPO runs that train the generators
    of those sets) take the data seed, training stages the training seed, so replicates share every
    data stage and differ only in what they train (a GRPO run with a probe still differs per seed:
    its probe's θ does).
    """

    def __init__(self, spec: "Spec", total_tokens: int, *, seed: int | None = None,
                 stages: dict[str, Stage] | None = None):
        self.total_tokens = total_tokens
        self.seed = spec.experiment.training_seeds()[0] if seed is None else seed
        self.base_spec = spec  # as written: its seeds and data seed
        self.spec = _seeded(spec, self.seed)
        self.data_spec = _seeded(spec, spec.experiment.resolved_data_seed())
        self._stages: dict[str, Stage] = {} if stages is None else stages
        self.pools = self._add(PoolsStage(self.data_spec))

    def seeded(self, seed: int) -> "GraphBuilder":
        """The same graph, handing out training stages that train with `seed`."""
        return GraphBuilder(self.base_spec, self.total_tokens, seed=seed, stages=self._stages)

    def data_seeded(self) -> "GraphBuilder":
        """The same graph at the data seed: the run whose checkpoints a shared refresh probes."""
        return self.seeded(self.base_spec.experiment.resolved_data_seed())

    def for_spec(self, spec: "Spec") -> "GraphBuilder":
        """The same graph for another spec (a fixed reference): stages both need appear once."""
        return GraphBuilder(spec, spec.budget.resolve(spec.model)[1], seed=self.seed, stages=self._stages)

    def _add(self, stage: Stage) -> Stage:
        return self._stages.setdefault(stage.key, stage)

    def extra(self) -> Stage:
        """The oracle's extra pool, sized so that organic + extra fill exactly the steps trained.

        The loader trains on whole `seq_len` windows of each shard; with W organic windows and
        S·B windows needed, the extra pool holds (S·B − W) windows, so one epoch covers the run and
        the oracle never repeats a token."""
        training = self.spec.training
        steps = max(1, math.ceil(self.total_tokens / training.tokens_per_step))
        organic_windows = self.spec.budget.resolve(self.spec.model)[0] // training.seq_len
        windows = max(0, steps * training.batch_size - organic_windows)
        return self._add(ExtraStage(self.data_spec, self.pools, windows * training.seq_len))

    def synthetic(self, op_name: str, generator: Stage | None = None) -> Stage:
        """One operation's rewrite of the pool, by the spec's generator or a trained one (a grpo stage)."""
        return self._add(SynthesizeStage(self.data_spec, op_name, self.pools, generator))

    def grpo(self, op_name: str, *, probe: Stage | None = None, previous: Stage | None = None,
             influence: bool = True) -> Stage:
        """The GRPO-trained generator of op_name: from the base model, or from `previous` (the last round's
        grpo stage) when grpo.init is "previous"; `probe` serves the influence reward. Without influence
        (the RePro ablation, or generators trained before any checkpoint exists) its weight is dropped."""
        spec = self.data_spec
        if not influence:
            from synpro.rewards.scoring import weights_for

            weights = {k: v for k, v in weights_for(spec, op_name).items() if k != "influence"}
            spec = spec.with_params({f"rewards.weights.{op_name}": weights})
        return self._add(GrpoStage(spec, op_name, self.pools, probe=probe if influence else None,
                                   previous=previous if spec.grpo.init == "previous" else None))

    def pretrain(self, sources: dict[str, Stage], *, label: str, parent: Stage | None = None,
                 stop: dict | None = None, synthetic_share: float | None = None) -> Stage:
        """Pretraining on organic + `sources` to T; with a parent, continuing from where it ended.
        `synthetic_share`: the share of its tokens drawn from the synthetic sets (None: by token count)."""
        return self._add(PretrainStage(self.spec, self.total_tokens, self.pools, sources, label=label,
                                       parent=parent, continue_at="end" if parent is not None else None,
                                       stop=stop, synthetic_share=synthetic_share))

    def probe(self, pretrain: Stage, *, label: str = "") -> Stage:
        """θ → θ′ on the reference task, from where `pretrain` ended."""
        return self._add(ProbeStage(self.spec, pretrain, self.pools, label=label))

    def evaluate(self, pretrain: Stage | list[Stage], *, label: str) -> Stage | None:
        """Downstream evaluation of a pretraining run's snapshots; None when the spec lists no tasks."""
        if not self.spec.eval.tasks:
            return None
        from synpro.evaluation import BUILTIN_TASKS

        builtin = [t.name for t in self.spec.eval.tasks if t.name in BUILTIN_TASKS]
        tasks = self._add(EvalTaskStage(self.data_spec, self.pools, builtin)) if builtin else None
        return self._add(EvaluateStage(self.spec, pretrain, self.pools, tasks, label=label))

    def stages(self) -> list[Stage]:
        """Every stage, inputs before the stages that read them."""
        ordered: dict[str, Stage] = {}

        def visit(stage: Stage) -> None:
            for upstream in stage.inputs.values():
                visit(upstream)
            ordered.setdefault(stage.key, stage)

        for stage in list(self._stages.values()):
            visit(stage)
        return list(ordered.values())
