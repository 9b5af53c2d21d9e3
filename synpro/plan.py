"""Spec → plan: one trial's stage graph and resolved budget, computed without running anything.

Arms are recipes (synpro.arms) that ask a `GraphBuilder` for stages; the builder deduplicates them
by key, so the graph is a DAG whose shared stages (pools, extra, synthetic sets) appear once.
Every stage's key flows from its own config and its inputs' keys (synpro.stages.base), so a trial
that shares a stage with another shares its folder, and dropping an arm changes no other key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synpro.arms import ARMS, Arm
from synpro.spec import REFERENCE_ARM, ArmSpec, Spec
from synpro.stages import Stage
from synpro.stages.extra import ExtraStage
from synpro.stages.pools import PoolsStage
from synpro.stages.pretrain import PretrainStage
from synpro.stages.synthesize import SynthesizeStage


def _seeded(spec: Spec, seed: int) -> Spec:
    """The spec as a stage reads it: `experiment.seed` is the one seed that stage uses."""
    return spec.model_copy(update={"experiment": spec.experiment.model_copy(update={"seed": seed})})


class GraphBuilder:
    """Hands arms the trial's shared stages, each built once.

    Data stages (pools, extra, synthetic sets) take the data seed, pretraining stages the training
    seed, so replicates share every data stage and differ only in what they train.
    """

    def __init__(self, spec: Spec, total_tokens: int, *, seed: int | None = None,
                 stages: dict[str, Stage] | None = None):
        self.spec = spec
        self.total_tokens = total_tokens
        self.seed = spec.experiment.training_seeds()[0] if seed is None else seed
        self.data_spec = _seeded(spec, spec.experiment.resolved_data_seed())
        self._stages: dict[str, Stage] = {} if stages is None else stages
        self.pools = self._add(PoolsStage(self.data_spec))

    def seeded(self, seed: int) -> "GraphBuilder":
        """The same graph, handing out pretraining stages that train with `seed`."""
        return GraphBuilder(self.spec, self.total_tokens, seed=seed, stages=self._stages)

    def for_spec(self, spec: Spec) -> "GraphBuilder":
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

    def synthetic(self, op_name: str) -> Stage:
        return self._add(SynthesizeStage(self.data_spec, op_name, self.pools))

    def pretrain(self, sources: dict[str, Stage], *, label: str) -> Stage:
        return self._add(PretrainStage(_seeded(self.spec, self.seed), self.total_tokens, self.pools, sources,
                                       label=label))

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


@dataclass(frozen=True)
class ArmPlan:
    spec: ArmSpec
    arm: Arm
    stage: Stage
    seed: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        return self.stage.key


@dataclass(frozen=True)
class TrialPlan:
    spec: Spec
    unique_tokens: int
    total_tokens: int
    params_hash: str
    stages_dir: Path
    graph: list[Stage]  # every stage, inputs first
    arms: list[ArmPlan]  # one per (arm, seed), reference arms first: the others invert their curves
    reference_name: str | None = None  # the arm whose curve (per seed) defines effective tokens

    @property
    def seeds(self) -> list[int]:
        return self.spec.experiment.training_seeds()

    @property
    def references(self) -> dict[int, ArmPlan]:
        """The reference arm per training seed (none without an oracle)."""
        return {a.seed: a for a in self.arms if a.name == self.reference_name}

    def arm(self, name: str, seed: int | None = None) -> ArmPlan:
        return next(a for a in self.arms if a.name == name and seed in (None, a.seed))

    def folder(self, stage: Stage) -> Path:
        return self.stages_dir / stage.dirname

    def describe(self) -> list[dict[str, Any]]:
        """The graph as rows for `synpro plan` (done is read from the stage folders)."""
        from synpro.stages import is_done

        several = len(self.seeds) > 1
        by_stage = {a.stage.key: f"{a.name} (seed {a.seed})" if several else a.name for a in self.arms}
        return [{**stage.describe(), "arm": by_stage.get(stage.key), "path": str(self.folder(stage)),
                 "done": is_done(stage, self.stages_dir)} for stage in self.graph]


def make_arm(arm_spec: ArmSpec) -> Arm:
    cls = ARMS.get(arm_spec.kind)
    return cls(arm_spec.name, cls.Options.model_validate(arm_spec.model_extra or {}))


def plan_trial(spec: Spec) -> TrialPlan:
    """Every arm once per training seed; a fixed reference adds its oracle (per seed) to the graph,
    where it dedupes with every other trial's, so a study trains it once."""
    unique, total = spec.budget.resolve(spec.model)
    builder = GraphBuilder(spec, total)
    seeds = spec.experiment.training_seeds()
    arms = [ArmPlan(a, arm, arm.build(builder.seeded(seed)), seed)
            for seed in seeds for a in spec.arms for arm in [make_arm(a)]]
    reference = next((a.name for a in arms if a.arm.is_reference), None)
    if spec.reference.kind == "fixed":
        fixed = builder.for_spec(spec.with_params(spec.reference.params))
        oracle = ArmSpec(kind="oracle", name=REFERENCE_ARM)
        arms += [ArmPlan(oracle, arm, arm.build(fixed.seeded(seed)), seed) for seed in seeds
                 for arm in [make_arm(oracle)]]
        reference = REFERENCE_ARM
    arms.sort(key=lambda a: a.name != reference)
    return TrialPlan(spec, unique, total, spec.content_hash(), spec.workdir / "stages", builder.stages(), arms,
                     reference)
