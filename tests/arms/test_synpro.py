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
