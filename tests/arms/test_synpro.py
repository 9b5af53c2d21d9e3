"""The SynPro recipe: rounds of pretraining joined by refreshes (probe → GRPO → new sets → continue),
and its ablations as options, checked on the stage graph it emits (nothing is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synpro.plan import make_arm
from synpro.spec import Spec
from synpro.stages.graph import GraphBuilder
from synpro.training.result import TrainResult


def _spec(model: Path, arm: dict, **refresh) -> Spec:
    return Spec.model_validate({
        "experiment": {"name": "recipe"}, "budget": {"unique_tokens": 4000, "total_tokens": 16000},
        "generation": {"generator": {"model": str(model)}},
        "refresh": {"schedule": "tokens", "at_tokens": [4096, 8192], "max_rounds": 1, **refresh},
        "arms": [{"kind": "repetition"}, arm], "search": {"objective": {"arm": "repetition"}}})


def _ended(stopped: bool = True) -> TrainResult:
    return TrainResult(curve=[], tokens_seen=4096, steps=2, final_dir=Path("x"), tokens_per_source={},
                       epochs_per_source={}, seconds=1.0, tokens_per_second=1.0, stopped_early=stopped)


def _rounds(spec: Spec, ended=_ended) -> list:
    arm = make_arm(spec.arms[1])
    graph = GraphBuilder(spec, spec.budget.resolve(spec.model)[1])
    rounds = arm.rounds(graph)
    stages = [next(rounds)]
    while True:
        try:
            stages.append(rounds.send(ended()))
        except StopIteration:
            return stages


def test_one_refresh_probes_trains_a_generator_per_operation_and_continues(random_model):
    first, second = _rounds(_spec(random_model, {"kind": "synpro"}))
    assert first.config["stop"] == {"at_tokens": 4096} and first.config["mixture"] == ["organic"]
    assert second.inputs["parent"] is first and second.config["continue_at"] == "end"
    assert second.config["stop"] is None  # the last round runs to T
    assert second.config["mixture"] == ["organic", "rephrase-r1", "reformat-r1"]
    for name in ("rephrase-r1", "reformat-r1"):
        generator = second.inputs[name].inputs["generator"]
        assert generator.kind == "grpo" and generator.inputs["probe"].inputs["pretrain"] is first
    # Both generators learn from one probe of where round 0 ended.
    assert second.inputs["rephrase-r1"].inputs["generator"].inputs["probe"] is \
        second.inputs["reformat-r1"].inputs["generator"].inputs["probe"]


def test_no_refresh_when_the_round_runs_to_the_end(random_model):
    [only] = _rounds(_spec(random_model, {"kind": "synpro"}), ended=lambda: _ended(stopped=False))
    assert only.config["mixture"] == ["organic"]


def test_cumulative_and_latest_pools_over_two_refreshes(random_model):
    cumulative = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}, max_rounds=2))
    latest = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], "pool": "latest"},
                           max_rounds=2))
    assert [s.config["mixture"] for s in cumulative] == [["organic"], ["organic", "rephrase-r1"],
                                                         ["organic", "rephrase-r1", "rephrase-r2"]]
    assert latest[-1].config["mixture"] == ["organic", "rephrase-r2"]
    assert [s.config["stop"] for s in cumulative] == [{"at_tokens": 4096}, {"at_tokens": 8192}, None]


@pytest.mark.parametrize("options", [{"influence": False}, {"refresh": False}])
def test_ablations_train_generators_without_the_influence_reward(random_model, options):
    stages = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], **options}))
    generator = stages[-1].inputs["rephrase-r1" if options.get("refresh", True) else "rephrase"].inputs["generator"]
    assert "probe" not in generator.inputs
    full = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}))
    assert generator.key != full[-1].inputs["rephrase-r1"].inputs["generator"].key
    if options.get("refresh") is False:  # static generators: one round, sets from the start
        assert len(stages) == 1 and stages[0].config["stop"] is None


def test_initial_sets_train_round_0_on_static_generators_and_later_rounds_refresh(random_model):
    """`initial_sets`: round 0 reads a first generation of sets made by generators GRPO-trained before
    pretraining (no probe, no influence): the very stages of a `refresh: false` arm (same keys)."""
    arm = {"kind": "synpro", "operations": ["rephrase"], "initial_sets": True}
    first, second, third = _rounds(_spec(random_model, arm, max_rounds=2))
    assert first.config["mixture"] == ["organic", "rephrase-r0"] and first.config["stop"] == {"at_tokens": 4096}
    initial = first.inputs["rephrase-r0"].inputs["generator"]
    assert initial.kind == "grpo" and "probe" not in initial.inputs and "previous" not in initial.inputs
    [static] = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], "refresh": False}))
    assert static.inputs["rephrase"].key == first.inputs["rephrase-r0"].key
    # Refreshes as without initial sets (from the base model by default), on a cumulative pool.
    assert third.config["mixture"] == ["organic", "rephrase-r0", "rephrase-r1", "rephrase-r2"]
    plain = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}, max_rounds=2))
    assert second.inputs["rephrase-r1"].inputs["generator"].config == plain[1].inputs["rephrase-r1"].inputs[
        "generator"].config
    assert "previous" not in second.inputs["rephrase-r1"].inputs["generator"].inputs
    # grpo.init: previous continues from the initial generator; pool: latest drops the initial sets.
    spec = _spec(random_model, arm).with_params({"grpo.init": "previous"})
    start, refreshed = _rounds(spec)
    assert refreshed.inputs["rephrase-r1"].inputs["generator"].inputs["previous"] is \
        start.inputs["rephrase-r0"].inputs["generator"]
    _, latest = _rounds(_spec(random_model, {**arm, "pool": "latest"}))
    assert latest.config["mixture"] == ["organic", "rephrase-r1"]


def test_default_keys_do_not_move_and_a_refresh_that_remakes_a_set_adds_it_once(random_model):
    plain = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}))
    explicit = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], "initial_sets": False,
                                            "synthetic_share": None}))
    assert [s.key for s in plain] == [s.key for s in explicit]
    # No influence and generators from the base model: every refresh's GRPO run is the initial one, so
    # its set is too, and the pool holds it once (a source twice would be refused by the loader).
    arm = {"kind": "synpro", "operations": ["rephrase"], "initial_sets": True, "influence": False}
    stages = _rounds(_spec(random_model, arm, max_rounds=2))
    assert [s.config["mixture"] for s in stages] == [["organic", "rephrase-r0"]] * 3
    repro = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], "influence": False},
                          max_rounds=2))
    assert repro[-1].config["mixture"] == ["organic", "rephrase-r1"]


def test_the_synthetic_share_keys_only_the_rounds_that_read_sets(random_model):
    plain = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}))
    shared = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"], "synthetic_share": 0.25}))
    assert shared[0].key == plain[0].key and "synthetic_share" not in shared[0].config  # organic only: one run
    assert shared[1].config["synthetic_share"] == 0.25 and shared[1].key != plain[1].key
    [static] = _rounds(_spec(random_model, {"kind": "synpro", "refresh": False, "synthetic_share": 0.5}))
    assert static.config["synthetic_share"] == 0.5
    # A search samples it like any field: `arms.<arm name>.synthetic_share`.
    searched = _rounds(_spec(random_model, {"kind": "synpro", "operations": ["rephrase"]}).with_params(
        {"arms.synpro.synthetic_share": 0.25}))
    assert [s.key for s in searched] == [s.key for s in shared]


def test_replicates_share_each_refresh_probed_on_the_data_seed(random_model):
    """Seeds 0 and 1 with data seed 0: both continue from their own θ on one set, made by one generator
    that learnt from one probe of seed 0's round 0."""
    spec = _spec(random_model, {"kind": "synpro", "operations": ["rephrase"]})
    spec = spec.model_copy(update={"experiment": spec.experiment.model_copy(update={"seeds": [0, 1], "data_seed": 0})})
    arm = make_arm(spec.arms[1])
    graph = GraphBuilder(spec, spec.budget.resolve(spec.model)[1])
    by_seed = {}
    for seed in (0, 1):
        rounds = arm.rounds(graph.seeded(seed))
        by_seed[seed] = [next(rounds), rounds.send(_ended())]
    (first0, second0), (first1, second1) = by_seed[0], by_seed[1]
    assert first0.key != first1.key and second0.key != second1.key  # each seed trains its own model
    assert second0.inputs["parent"] is first0 and second1.inputs["parent"] is first1
    assert second0.inputs["rephrase-r1"] is second1.inputs["rephrase-r1"]  # one set for both
    generator = second1.inputs["rephrase-r1"].inputs["generator"]
    assert generator.inputs["probe"].inputs["pretrain"] is first0  # probed where the data seed's run ended


def test_refresh_operations_retrain_only_the_named_generators(random_model):
    """The release: initial rephrase and reformat sets, refreshes retrain the reformat generator only."""
    arm = {"kind": "synpro", "initial_sets": True, "refresh_operations": ["reformat"]}
    first, second = _rounds(_spec(random_model, arm))
    assert first.config["mixture"] == ["organic", "rephrase-r0", "reformat-r0"]
    assert second.config["mixture"] == ["organic", "rephrase-r0", "reformat-r0", "reformat-r1"]
    with pytest.raises(ValueError, match="not among operations"):
        make_arm(_spec(random_model, {**arm, "operations": ["rephrase"]}).arms[1])
