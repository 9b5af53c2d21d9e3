"""The stage graph of a trial: replicates share every data stage, a fixed reference is one oracle."""

from synpro.plan import plan_trial
from synpro.spec import parse_spec

SPEC = """
experiment: {{name: p, seed: 3{seeds}}}
budget: {{unique_tokens: 6000, total_tokens: 24000, validation_tokens: 4000}}
training: {{batch_size: 8, seq_len: 64}}
arms: [{{kind: repetition}}, {{kind: oracle}}, {{kind: synpro}}]
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
    assert {(a.name, a.seed) for a in three.arms} == {(n, s) for n in ("repetition", "oracle", "synpro")
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
