"""Spec → plan: the trial's stage graph, shared stages, and keys that do not move when arms do."""

from __future__ import annotations

from pathlib import Path

from synpro.plan import plan_trial
from synpro.spec import load_spec

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def _keys(plan) -> dict[tuple, str]:
    return {(s.kind, s.label, tuple(sorted(s.inputs))): s.key for s in plan.graph}


def test_the_graph_shares_stages_and_lists_inputs_first():
    plan = plan_trial(load_spec(QUICKSTART))
    kinds = [s.kind for s in plan.graph]
    assert kinds.count("pools") == 1 and kinds.count("extra") == 1 and kinds.count("synthesize") == 2
    assert kinds.count("pretrain") == 4 and kinds.count("evaluate") == 4 and kinds.count("evaltask") == 1
    seen: set[str] = set()
    for stage in plan.graph:
        assert all(up.key in seen for up in stage.inputs.values())
        seen.add(stage.key)
    assert plan.arms[0].name == "oracle"  # the reference first
    prompted, synpro = plan.arm("prompted").stage, plan.arm("synpro").stage
    assert prompted.inputs["rephrase"] is synpro.inputs["rephrase"]  # one set, two arms


def test_dropping_or_adding_an_arm_moves_no_other_key():
    spec = load_spec(QUICKSTART)
    full = _keys(plan_trial(spec))
    for dropped in ("prompted", "oracle", "synpro"):
        fewer = _keys(plan_trial(spec.with_params({
            "arms": [a.model_dump() for a in spec.arms if a.name != dropped],
            "search.objective": {"arm": "repetition", "metric": "final_val_loss", "direction": "minimize"}})))
        assert set(fewer.items()) < set(full.items()), dropped


def test_a_pretraining_stage_is_keyed_by_its_synthetic_sets_content_config():
    spec = load_spec(QUICKSTART)
    base = plan_trial(spec)
    hotter = plan_trial(spec.with_params({"generation.generator.temperature": 0.7}))
    assert hotter.arm("repetition").key == base.arm("repetition").key  # no synthetic input
    assert hotter.arm("prompted").key != base.arm("prompted").key
    assert hotter.arm("prompted").stage.inputs["rephrase"].key != base.arm("prompted").stage.inputs["rephrase"].key
    faster = plan_trial(spec.with_params({"generation.generator.batch_size": 2}))  # speed only
    assert faster.arm("prompted").key == base.arm("prompted").key
