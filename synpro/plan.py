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
from synpro.spec import ArmSpec, Spec
from synpro.stages import Stage
from synpro.stages.evaltask import EvalTaskStage
from synpro.stages.evaluate import EvaluateStage
from synpro.stages.extra import ExtraStage
from synpro.stages.pools import PoolsStage
from synpro.stages.pretrain import PretrainStage
from synpro.stages.synthesize import SynthesizeStage


class GraphBuilder:
    """Hands arms the trial's shared stages, each built once."""

    def __init__(self, spec: Spec, total_tokens: int):
        self.spec = spec
        self.total_tokens = total_tokens
        self._stages: dict[str, Stage] = {}
        self.pools = self._add(PoolsStage(spec))

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
        return self._add(ExtraStage(self.spec, self.pools, windows * training.seq_len))

    def synthetic(self, op_name: str) -> Stage:
        return self._add(SynthesizeStage(self.spec, op_name, self.pools))

    def pretrain(self, sources: dict[str, Stage], *, label: str) -> Stage:
        return self._add(PretrainStage(self.spec, self.total_tokens, self.pools, sources, label=label))

    def evaluate(self, pretrain: Stage, *, label: str) -> Stage | None:
        """Downstream evaluation of a pretraining run's snapshots; None when the spec lists no tasks."""
        if not self.spec.eval.tasks:
            return None
        from synpro.evaluation import BUILTIN_TASKS

        builtin = [t.name for t in self.spec.eval.tasks if t.name in BUILTIN_TASKS]
        tasks = self._add(EvalTaskStage(self.spec, self.pools, builtin)) if builtin else None
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


@dataclass(frozen=True)
class ArmPlan:
    spec: ArmSpec
    arm: Arm
    stage: Stage  # the arm's pretraining
    evaluation: Stage | None = None  # downstream accuracy of its snapshots

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
    arms: list[ArmPlan]  # reference arm first: later arms' effective tokens invert its curve

    @property
    def reference(self) -> ArmPlan | None:
        return next((a for a in self.arms if a.arm.is_reference), None)

    def arm(self, name: str) -> ArmPlan:
        return next(a for a in self.arms if a.name == name)

    def folder(self, stage: Stage) -> Path:
        return self.stages_dir / stage.dirname

    def describe(self) -> list[dict[str, Any]]:
        """The graph as rows for `synpro plan` (done is read from the stage folders)."""
        from synpro.stages import is_done

        by_stage = {s.key: a.name for a in self.arms for s in (a.stage, a.evaluation) if s is not None}
        return [{**stage.describe(), "arm": by_stage.get(stage.key), "path": str(self.folder(stage)),
                 "done": is_done(stage, self.stages_dir)} for stage in self.graph]


def make_arm(arm_spec: ArmSpec) -> Arm:
    cls = ARMS.get(arm_spec.kind)
    return cls(arm_spec.name, cls.Options.model_validate(arm_spec.model_extra or {}))


def plan_trial(spec: Spec) -> TrialPlan:
    unique, total = spec.budget.resolve(spec.model)
    builder = GraphBuilder(spec, total)
    arms = []
    for arm_spec in spec.arms:
        arm = make_arm(arm_spec)
        stage = arm.build(builder)
        arms.append(ArmPlan(arm_spec, arm, stage, builder.evaluate(stage, label=arm.name)))
    arms.sort(key=lambda a: not a.arm.is_reference)
    return TrialPlan(spec, unique, total, spec.content_hash(), spec.workdir / "stages", builder.stages(), arms)
