"""Spec → plan: one trial's stage graph and resolved budget, computed without running anything.

Arms are recipes (synpro.arms) that ask a `GraphBuilder` (synpro.stages.graph) for stages; the
builder deduplicates them by key, so the graph is a DAG whose shared stages (pools, extra,
synthetic sets) appear once.
Every stage's key flows from its own config and its inputs' keys (synpro.stages.base), so a trial
that shares a stage with another shares its folder, and dropping an arm changes no other key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synpro.arms import ARMS, Arm
from synpro.spec import ArmSpec, Spec
from synpro.stages import Stage
from synpro.stages.graph import GraphBuilder


@dataclass(frozen=True)
class ArmPlan:
    spec: ArmSpec
    arm: Arm
    stage: Stage  # the arm's (first round of) pretraining
    evaluation: Stage | None = None  # downstream accuracy of its snapshots (of the first round, for `synpro plan`)

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
    graph: list[Stage]  # every stage known before running (later refresh rounds depend on earlier ones)
    arms: list[ArmPlan]  # reference arm first: later arms' effective tokens invert its curve
    builder: GraphBuilder  # adds the stages of later rounds as the orchestrator runs them

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
        stage = next(arm.rounds(builder))
        arms.append(ArmPlan(arm_spec, arm, stage, builder.evaluate(stage, label=arm.name)))
    arms.sort(key=lambda a: not a.arm.is_reference)
    return TrialPlan(spec, unique, total, spec.content_hash(), spec.workdir / "stages", builder.stages(), arms,
                     builder)
