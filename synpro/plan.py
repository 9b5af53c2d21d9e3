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
from synpro.spec import REFERENCE_ARM, ArmSpec, Spec
from synpro.stages import Stage
from synpro.stages.graph import GraphBuilder


@dataclass(frozen=True)
class ArmPlan:
    spec: ArmSpec
    arm: Arm
    stage: Stage  # the arm's (first round of) pretraining
    evaluation: Stage | None = None  # downstream accuracy of its snapshots (of the first round, for `synpro plan`)
    seed: int = 0
    builder: GraphBuilder | None = None  # the graph seeded for this arm (later rounds come from it)

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
    arms: list[ArmPlan]  # one per (arm, seed), reference arms first: the others invert their curves
    builder: GraphBuilder  # adds the stages of later rounds as the orchestrator runs them
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

    def rounds_so_far(self, arm: ArmPlan) -> list[Stage]:
        """The arm's pretraining rounds known from its stage folders: the first, then each later round
        whose predecessor finished (a refresh round depends on where the previous one stopped)."""
        from synpro.stages import Runner, is_done

        rounds = arm.arm.rounds(arm.builder)
        stages = [next(rounds)]
        loader = Runner(self.stages_dir, progress=False)  # loads finished stages only: nothing runs
        while is_done(stages[-1], self.stages_dir):
            try:
                stages.append(rounds.send(loader.run(stages[-1])))
            except StopIteration:
                break
        return stages

    def describe(self) -> list[dict[str, Any]]:
        """The graph as rows for `synpro plan` (done is read from the stage folders), with the refresh
        rounds a finished or running sweep has reached and each arm's evaluation over all its rounds."""
        from synpro.executors import make_executor, read_job
        from synpro.stages import is_done

        several = len(self.seeds) > 1
        by_stage, evaluations = {}, set()
        for a in self.arms:
            label = f"{a.name} (seed {a.seed})" if several else a.name
            stages = self.rounds_so_far(a)
            evaluation = a.builder.evaluate(stages, label=a.name)
            for s in [*stages, evaluation]:
                if s is not None:
                    by_stage.setdefault(s.key, label)
            if evaluation is not None:
                evaluations.add(evaluation.key)
        graph = [s for s in self.builder.stages() if s.kind != "evaluate" or s.key in evaluations]
        executor = make_executor(self.spec)
        rows = []
        for stage in graph:
            job = read_job(self.folder(stage))
            rows.append({**stage.describe(), "arm": by_stage.get(stage.key), "path": str(self.folder(stage)),
                         "done": is_done(stage, self.stages_dir), "executor": executor.describe(stage),
                         "resources": executor.resources(stage).shown(),
                         "job": {k: job[k] for k in ("executor", "job_id", "pid", "state") if k in job} if job else None})
        return rows


def make_arm(arm_spec: ArmSpec) -> Arm:
    cls = ARMS.get(arm_spec.kind)
    return cls(arm_spec.name, cls.Options.model_validate(arm_spec.model_extra or {}))


def _arm_plan(arm_spec: ArmSpec, builder: GraphBuilder) -> ArmPlan:
    arm = make_arm(arm_spec)
    stage = next(arm.rounds(builder))
    return ArmPlan(arm_spec, arm, stage, builder.evaluate(stage, label=arm.name), builder.seed, builder)


def plan_trial(spec: Spec) -> TrialPlan:
    """Every arm once per training seed; a fixed reference adds its oracle (per seed) to the graph,
    where it dedupes with every other trial's, so a study trains it once."""
    unique, total = spec.budget.resolve(spec.model)
    builder = GraphBuilder(spec, total)
    seeds = spec.experiment.training_seeds()
    arms = [_arm_plan(arm_spec, builder.seeded(seed)) for seed in seeds for arm_spec in spec.arms]
    reference = next((a.name for a in arms if a.arm.is_reference), None)
    if spec.reference.kind == "fixed":
        fixed = builder.for_spec(spec.with_params(spec.reference.params))
        arms += [_arm_plan(ArmSpec(kind="oracle", name=REFERENCE_ARM), fixed.seeded(seed)) for seed in seeds]
        reference = REFERENCE_ARM
    arms.sort(key=lambda a: a.name != reference)
    return TrialPlan(spec, unique, total, spec.content_hash(), spec.workdir / "stages", builder.stages(), arms,
                     builder, reference)
