"""A trial's analysis: effective tokens against the reference of each seed, the tail-mean multiplier,
its mean over seeds with an interval paired by seed, the noise floor and epochs per source; and, end
to end, replicates and the reference kinds in `synpro results`."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from synpro.effective import tail_d_eff, tail_multiplier
from synpro.pipeline import ArmOutcome, TrialOutcome, analyze, objective_values
from synpro.plan import plan_trial
from synpro.spec import parse_spec
from synpro.training import EvalPoint, TrainResult
import warm_cli

SPEC = """
experiment: {name: a, seeds: [0, 1, 2]}
budget: {unique_tokens: 6144, total_tokens: 24576, validation_tokens: 4000}
training: {batch_size: 8, seq_len: 64, warmup_tokens: 4096, eval_interval_tokens: 2048}
arms: [{kind: repetition}, {kind: oracle}, {kind: synpro}]
search: {objective: {arm: synpro, metric: multiplier_vs_repetition, direction: maximize}}
analysis: {tail_checkpoints: 4}
"""
TOKENS = np.arange(0, 24577, 2048)


def loss(d_eff: np.ndarray) -> np.ndarray:
    return 2.0 + 40.0 / np.maximum(d_eff, 1.0) ** 0.4


def result(values: np.ndarray, epochs: dict[str, float]) -> TrainResult:
    curve = [EvalPoint(int(t), int(t) // 512, float(v), None) for t, v in zip(TOKENS, values)]
    return TrainResult(curve, int(TOKENS[-1]), int(TOKENS[-1]) // 512, Path("."), {}, epochs, 1.0, 1.0)


def outcomes(plan, worth: dict[str, list[float]]) -> dict:
    """Every arm of the plan at every seed; an arm's D_eff is `worth[name][seed index]` x tokens,
    repetition's last checkpoint jitters upward (what a single final point would read)."""
    made = {}
    for i, arm in enumerate(plan.arms):
        factor = worth[arm.name][plan.seeds.index(arm.seed)]
        d_eff = factor * TOKENS.astype(float)
        if arm.name == "repetition":
            d_eff[-1] *= 1.3
        epochs = {"organic": 1.0, "extra": 1.0} if arm.name == "oracle" else {"organic": 4.0}
        made[(arm.name, arm.seed)] = ArmOutcome(arm.name, arm.spec.kind, arm.seed, i, result(loss(d_eff), epochs),
                                                6144, None)
    return made


def test_the_analysis_uses_the_tail_mean_pairs_seeds_and_reports_the_noise_floor():
    plan = plan_trial(parse_spec(SPEC))
    worth = {"oracle": [1.0, 1.0, 1.0], "repetition": [0.5, 0.55, 0.45], "synpro": [0.9, 1.1, 0.8]}
    arms = outcomes(plan, worth)
    analysis = analyze(plan, arms)
    assert analysis["reference"] == {"kind": "trial", "arm": "oracle"} and analysis["tail_checkpoints"] == 4
    for seed in plan.seeds:
        synpro, repetition = arms[("synpro", seed)], arms[("repetition", seed)]
        expected = tail_multiplier(synpro.effective, repetition.effective, 4)
        assert synpro.multiplier == expected and expected.method == "tail-mean-k4"
        assert synpro.tail == tail_d_eff(synpro.effective, 4)
        # Not the final-point ratio: repetition's jittery last point is one of four.
        final = synpro.effective[-1][1] / repetition.effective[-1][1]
        assert not math.isclose(expected.multiplier, final, rel_tol=1e-3)
        assert synpro.summary()["epochs_per_source"] == {"organic": 4.0}
    stats = analysis["arms"]["synpro"]
    ratios = [arms[("synpro", s)].multiplier.multiplier for s in plan.seeds]
    assert stats["n_seeds"] == 3 and stats["multiplier_vs_repetition"] == pytest.approx(np.exp(np.mean(np.log(ratios))))
    low, high = stats["multiplier_ci"]
    assert low < stats["multiplier_vs_repetition"] < high
    assert stats["multiplier_method"] == "tail-mean-k4 per seed, paired-t-log-ratio-95 over seeds"
    assert stats["per_seed"] == {str(s): r for s, r in zip(plan.seeds, ratios)}
    floor = analysis["noise_floor"]
    assert set(floor["oracle_tail"]) == set(floor["first_pass_calibration"]) == {"0", "1", "2"}
    tail = floor["oracle_tail"]["0"]
    assert tail["from_tokens"] == 4096 and tail["n_points"] == sum(TOKENS > 4096) and tail["r2"] > 0.99
    calibration = floor["first_pass_calibration"]["1"]
    assert calibration["first_pass_tokens"] == 6144 and calibration["n_points"] == 3
    assert calibration["ratio"] == pytest.approx(0.55, rel=0.05)  # repetition's D_eff / tokens in its first pass
    trial = TrialOutcome(arms, analysis)
    assert objective_values(plan, trial) == [stats["multiplier_vs_repetition"]]
    assert trial.summary()["arms"]["synpro"]["per_seed"]["2"]["seed"] == 2


def test_a_given_reference_replaces_the_trials_own_oracle():
    plan = plan_trial(parse_spec(SPEC))
    arms = outcomes(plan, {"oracle": [1.0] * 3, "repetition": [0.5] * 3, "synpro": [1.0] * 3})
    better = {seed: result(loss(2.0 * TOKENS.astype(float)), {}) for seed in plan.seeds}  # twice as good
    info = {"kind": "best", "arm": "oracle", "trial": 7}
    analysis = analyze(plan, arms, better, info)
    assert analysis["reference"] == info
    assert arms[("oracle", 0)].tail.d_eff == pytest.approx(0.5 * tail_d_eff(
        [(t, t, False) for t in TOKENS[1:]], 4).d_eff, rel=0.02)
    assert analysis["arms"]["synpro"]["multiplier_vs_repetition"] == pytest.approx(2.0, rel=0.1)


# ---- end to end ------------------------------------------------------------------------------------

TINY = """
experiment: {{name: tiny, seed: 1{seeds}}}
tokenizer: {{vocab_size: 512}}
model: {{preset: tiny}}
budget: {{unique_tokens: 6000, total_tokens: 24000, validation_tokens: 4000}}
training: {{lr: 1.0e-2, warmup_tokens: 2000, batch_size: 8, seq_len: 64, eval_interval_tokens: 4096}}
arms: [{{kind: repetition}}, {{kind: oracle}}]
reference: {reference}
search:
  sampler: grid
  objective: {{arm: oracle, metric: multiplier_vs_repetition, direction: maximize}}
  params:
    training.lr: {{type: categorical, choices: {lrs}}}
"""


def sweep(tmp_path: Path, seeds: str, reference: str, lrs: list[float]) -> list[dict]:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.format(seeds=seeds, reference=reference, lrs=lrs))
    run = [sys.executable, "-m", "cli"]
    done = warm_cli.run([*run, "sweep", str(spec), "--workdir", str(tmp_path / "wd"), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    shown = warm_cli.run([*run, "results", "--workdir", str(tmp_path / "wd"), "--format", "json"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.slow  # ~35 s: six tiny trainings
def test_two_seeds_and_a_fixed_reference_end_to_end(tmp_path):
    [trial] = sweep(tmp_path, ", seeds: [0, 1]", "{kind: fixed, params: {training.lr: 3.0e-3}}", [1.0e-2])
    assert trial["reference"] == {"kind": "fixed", "arm": "reference", "params": {"training.lr": 3.0e-3}}
    assert list(trial["arms"]) == ["reference", "repetition", "oracle"]
    oracle = trial["arms"]["oracle"]
    assert oracle["n_seeds"] == 2 and list(oracle["per_seed"]) == ["0", "1"]
    low, high = oracle["multiplier_ci"]
    assert low < oracle["multiplier_vs_repetition"] < high
    assert oracle["multiplier_method"].startswith("tail-mean-k3 per seed")
    for seed in ("0", "1"):
        assert oracle["per_seed"][seed]["epochs_per_source"] == {"organic": 1.0, "extra": 1.0}
        assert trial["arms"]["repetition"]["per_seed"][seed]["epochs_per_source"]["organic"] == pytest.approx(4, abs=0.1)
    assert trial["objective_value"] == pytest.approx(oracle["multiplier_vs_repetition"])
    assert set(trial["noise_floor"]["first_pass_calibration"]) == {"0", "1"}
    assert trial["noise_floor"]["oracle_tail"]["0"]["from_tokens"] == 2000
    stages = [p.name.split("-")[0] for p in (tmp_path / "wd" / "stages").iterdir()]
    assert sorted(stages).count("pools") == 1 and sorted(stages).count("pretrain") == 6


@pytest.mark.slow  # ~50 s: two trials, recomputed at the end
def test_the_best_oracle_becomes_every_trials_reference(tmp_path):
    trials = sweep(tmp_path, "", "best", [1.0e-2, 3.0e-3])
    losses = {t["trial"]: t["arms"]["oracle"]["final_val_loss"] for t in trials}
    best = min(losses, key=losses.get)
    for trial in trials:
        assert trial["reference"]["kind"] == "best" and trial["reference"]["trial"] == best
        assert "provisional" not in trial["reference"]
    [winner] = [t for t in trials if t["trial"] == best]
    [other] = [t for t in trials if t["trial"] != best]
    # The best oracle inverted against itself sits on its own curve; the other trial's oracle is worse.
    assert winner["arms"]["oracle"]["effective_tokens_extrapolated"] is False
    assert other["arms"]["oracle"]["effective_tokens"] < winner["arms"]["oracle"]["effective_tokens"]
