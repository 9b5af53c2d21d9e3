"""Spec → plan: the trial's stage graph, shared stages, and keys that do not move when arms do;
replicates share every data stage, a fixed reference is one oracle."""

from __future__ import annotations

from pathlib import Path

from synpro.plan import plan_trial
from synpro.spec import load_spec, parse_spec

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def _keys(plan) -> dict[tuple, str]:
    return {(s.kind, s.label, tuple(sorted(s.inputs))): s.key for s in plan.graph}


def test_the_graph_shares_stages_and_lists_inputs_first():
    plan = plan_trial(load_spec(QUICKSTART))
    kinds = [s.kind for s in plan.graph]
    assert kinds.count("pools") == 1 and kinds.count("extra") == 1 and kinds.count("synthesize") == 1
    assert kinds.count("pretrain") == 4 and kinds.count("evaluate") == 4 and kinds.count("evaltask") == 1
    seen: set[str] = set()
    for stage in plan.graph:
        assert all(up.key in seen for up in stage.inputs.values())
        seen.add(stage.key)
    assert plan.arms[0].name == "oracle"  # the reference first
    # SynPro's first round is organic text until its refresh point; its sets come after the refresh.
    synpro = plan.arm("synpro").stage
    assert synpro.config["mixture"] == ["organic"] and synpro.config["stop"] == {"at_tokens": 122880}


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


SPEC = """
experiment: {{name: p, seed: 3{seeds}}}
budget: {{unique_tokens: 6000, total_tokens: 24000, validation_tokens: 4000}}
training: {{batch_size: 8, seq_len: 64}}
arms: [{{kind: repetition}}, {{kind: oracle}}, {{kind: prompted}}]
{extra}
"""


def plan(seeds: str = "", extra: str = ""):
    return plan_trial(parse_spec(SPEC.format(seeds=seeds, extra=extra)))


def keys(trial, kind: str) -> set[str]:
    return {s.key for s in trial.graph if s.kind == kind}


def test_replicates_share_data_stages_and_train_once_per_seed():
    one, three = plan(), plan(", replicates: 3")
    assert three.seeds == [3, 4, 5]
    for kind in ("pools", "extra", "synthesize"):
        assert keys(three, kind) == keys(one, kind) and len(keys(one, kind)) >= 1
    assert len(keys(three, "pretrain")) == 3 * len(keys(one, "pretrain")) == 9
    assert keys(one, "pretrain") < keys(three, "pretrain")  # the first seed is the single-seed trial
    assert {(a.name, a.seed) for a in three.arms} == {(n, s) for n in ("repetition", "oracle", "prompted")
                                                      for s in (3, 4, 5)}
    assert {s: a.name for s, a in three.references.items()} == {3: "oracle", 4: "oracle", 5: "oracle"}
    assert [row["arm"] for row in three.describe() if row["kind"] == "pretrain"][0].endswith("(seed 3)")


def test_data_seed_moves_the_data_and_not_the_training():
    base, moved = plan(", seeds: [3, 4]"), plan(", seeds: [3, 4], data_seed: 11")
    assert keys(base, "pools").isdisjoint(keys(moved, "pools"))
    trained = {a.stage.config["seed"] for a in moved.arms}
    assert trained == {3, 4}


def test_a_fixed_reference_is_one_oracle_shared_by_every_trial():
    extra = "reference: {kind: fixed, params: {training.lr: 1.0e-3}}"
    spec = parse_spec(SPEC.format(seeds=", seeds: [0, 1]", extra=extra))
    trials = [plan_trial(spec.with_params({"training.lr": lr})) for lr in (1.0e-3, 5.0e-3)]
    references = [{s: a.stage.key for s, a in t.references.items()} for t in trials]
    assert references[0] == references[1] and len(set(references[0].values())) == 2  # one per seed
    # At the reference's own lr the trial's oracle is that very stage; elsewhere it is another.
    own = [{a.seed: a.stage.key for a in t.arms if a.name == "oracle"} for t in trials]
    assert own[0] == references[0] and set(own[1].values()).isdisjoint(references[1].values())
    assert trials[0].reference_name == "reference" and trials[0].arms[0].name == "reference"


EXPERIMENTS = QUICKSTART.parent


def test_every_shipped_spec_plans(random_model):
    """Every spec in experiments/ expands to a trial's graph. The paper specs name Hub models this offline
    machine cannot have, and a stage key fingerprints its generator's weights: the tiny test model stands in
    for OLMo-2-1B-Instruct there (shape only, as `synpro validate --shape-only`)."""
    from synpro.resolve import resolve

    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        spec = load_spec(path)
        paper = path.name.startswith("paper-")
        if paper:
            spec = spec.with_params({"generation.generator.model": str(random_model),
                                     "grpo.base_model": str(random_model)})
        resolve(spec, machine=not paper)
        plan = plan_trial(spec)
        kinds = {s.kind for s in plan.graph}
        assert {"pools", "pretrain"} <= kinds, path.name
        assert {a.name for a in plan.arms} >= {a.name for a in spec.arms}, path.name
