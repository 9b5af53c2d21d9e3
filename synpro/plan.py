"""Spec → plan: the resolved budget and the stage keys of one trial, computed without running anything.

A stage's folder is named by a hash of exactly the config and inputs it depends on, so a re-run finds
finished work, two trials that share a stage share its output, and a changed knob never reuses a
stale result.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synpro.arms import ARMS, Arm
from synpro.spec import ArmSpec, Spec


def config_hash(*parts: Any, length: int = 12) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ArmPlan:
    spec: ArmSpec
    arm: Arm
    key: str
    out_dir: Path

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class TrialPlan:
    spec: Spec
    unique_tokens: int
    total_tokens: int
    params_hash: str
    data_key: str
    data_dir: Path
    synthetic_dir: Path
    arms: list[ArmPlan]  # reference arm first: later arms' effective tokens invert its curve

    @property
    def reference(self) -> ArmPlan | None:
        return next((a for a in self.arms if a.arm.is_reference), None)

    def arm(self, name: str) -> ArmPlan:
        return next(a for a in self.arms if a.name == name)


def plan_trial(spec: Spec) -> TrialPlan:
    unique, total = spec.budget.resolve(spec.model)
    stages = spec.workdir / "stages"
    data_cfg = (spec.corpus.model_dump(mode="json"), spec.tokenizer.model_dump(mode="json"),
                unique, total, spec.budget.validation_tokens, spec.experiment.seed,
                sorted(ARMS.get(a.kind).is_reference for a in spec.arms))
    # The builtin corpus is CPython's own docs: another Python version is another corpus.
    corpus_id = str(spec.corpus_path() or "") or f"builtin-py{sys.version_info.major}.{sys.version_info.minor}"
    data_key = config_hash("data", data_cfg, corpus_id)
    arms = []
    for arm_spec in spec.arms:
        arm_cls = ARMS.get(arm_spec.kind)
        arm = arm_cls(arm_spec.name, arm_spec.options())
        # Synthetic sets are keyed by content in the generation stage; here, by the config that makes them.
        generation = spec.generation.model_dump(mode="json") if arm.operations() else None
        key = config_hash("train", data_key, arm_spec.kind, arm_spec.model_extra, generation,
                          spec.model.model_dump(mode="json"), spec.training.model_dump(mode="json"),
                          total, spec.experiment.seed)
        arms.append(ArmPlan(arm_spec, arm, key,
                            stages / f"train-{arm_spec.name}-{key}"))
    arms.sort(key=lambda a: not a.arm.is_reference)
    return TrialPlan(spec, unique, total, spec.content_hash(), data_key,
                     stages / f"data-{data_key}", stages / "synthetic", arms)
