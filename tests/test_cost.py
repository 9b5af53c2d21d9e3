"""`plan --estimate`: the cost model's FLOPs and memory against a hand count for the tiny preset, the stages a
refreshing arm adds, and the command's JSON rows and its exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from synpro import cost
from synpro.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = """
experiment: {name: tiny-cost}
tokenizer: {kind: train, vocab_size: 4096}
model: {preset: tiny}
budget: {unique_tokens: 8192, total_tokens: 20480, validation_tokens: 4096}
training: {batch_size: 16, seq_len: 128, eval_interval_tokens: 8192}
arms: [{kind: repetition}]
search: {objective: {arm: repetition, metric: final_val_loss, direction: minimize}}
"""


def test_pretraining_flops_and_memory_match_a_hand_count_for_the_tiny_preset():
    spec = parse_spec(TINY)
    result = cost.estimate(spec, cost.device("H100"))
    (pretrain,) = [s for s in result.stages if s.kind == "pretrain"]
    # tiny: d=64, L=2, ffn=256; per layer 4·64² + 3·64·256 + 4·64 = 65,792, so N = 2·65,792 + 64 = 131,648
    # non-embedding; N_mm adds the output head 64·4096 = 262,144 -> 393,792.
    assert cost.pretrain_shape(spec).non_embedding() == spec.model.non_embedding_params() == 131_648
    per_token = 6 * 393_792 + 12 * 2 * 64 * 128  # PaLM: 6·N_mm + 12·L·d·S = 2,559,360
    train = per_token * 20_480  # 10 steps of 16 x 128 tokens
    # validation passes: at 0, after steps 4 and 8 (crossing 8,192 and 16,384 tokens), after the last step 10
    validation = per_token // 3 * 4_096 * 4
    assert pretrain.flops == train + validation == 66_393_210_880
    assert pretrain.parts["validation_passes"] == 4
    # fp32: 16 bytes per parameter (131,648 + 2·4096·64), activations 2·34·S·b·d per layer, fp32 logits + grad
    memory = 16 * 655_936 + 2 * 2 * 34 * 128 * 16 * 64 + 8 * 128 * 16 * 4096
    assert pretrain.memory_gb * 1e9 == memory
    assert pretrain.gpu_hours == pytest.approx((train + validation) / (989e12 * 0.4) / 3600, rel=1e-12)
    (pools,) = [s for s in result.stages if s.kind == "pools"]
    assert pools.flops is None and pools.cpu_core_hours == pytest.approx((8192 + 4096) / 5e5 / 3600)


def test_a_refreshing_arm_adds_probe_grpo_and_sets_and_keeps_its_tokens_at_t():
    spec = load_spec(ROOT / "experiments" / "quickstart.yaml")
    result = cost.estimate(spec, cost.device("cpu"))
    synpro = [s for s in result.stages if "synpro" in s.arm.split(", ")]
    assert sorted(s.kind for s in synpro) == ["evaltask", "evaluate", "grpo", "pools", "pretrain", "pretrain", "probe",
                                              "synthesize"]
    rounds = [s.parts["tokens"] for s in synpro if s.kind == "pretrain"]
    assert sum(rounds) == spec.resolved_budget().total and rounds[0] == 122_880  # refresh.at_tokens
    grpo = next(s for s in synpro if s.kind == "grpo")
    assert grpo.parts["completions"] == 2 * 4  # steps x prompts_per_step x num_generations
    assert grpo.flops == sum(grpo.parts[k] for k in ("rollouts", "policy", "reference", "influence"))
    assert grpo.parts["reference"] == 0  # beta 0: no reference model
    assert all(s.gpu_hours == 0 and s.cpu_core_hours > 0 for s in result.stages if s.flops)


def test_estimate_json_rows_and_the_over_memory_flag(tmp_path):
    res = CliRunner().invoke(app, ["plan", str(ROOT / "experiments" / "paper-400m.yaml"), "--estimate", "--gpu",
                                   "h100", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["device"]["name"] == "H100" and data["assumptions"]["mfu"] == 0.4
    rows = data["stages"]
    assert {"kind", "arm", "flops", "memory_gb", "gpu_hours"} <= set(rows[0])
    assert {r["kind"] for r in rows} >= {"pools", "pretrain", "evaluate", "synthesize"}
    assert data["totals"]["trial"]["gpu_hours"] == sum(r["gpu_hours"] for r in rows)
    flagged = [r for r in rows if r["fits"] is False]
    assert all(r["memory_gb"] > 80 for r in flagged)
    assert data["totals"]["over_memory"] == [f"{r['kind']} {r['label'] or r['arm']}" for r in flagged]


def test_grpo_memory_on_a_gpu_follows_the_stages_cuda_defaults():
    """The paper spec's 1B policy: checkpointed micro batches of 4 and vLLM in its share fit an 80 GB GPU;
    the same spec without checkpointing and with every completion in one pass does not."""
    spec = load_spec(ROOT / "experiments" / "paper-400m.yaml")
    h100 = cost.device("H100")
    grpo = next(s for s in cost.estimate(spec, h100).stages if s.kind == "grpo")
    assert grpo.fits and grpo.memory_gb < 80
    whole = spec.model_copy(update={"grpo": spec.grpo.model_copy(update={
        "gradient_checkpointing": False, "micro_batch_size": spec.grpo.completions_per_step})})
    unfit = next(s for s in cost.estimate(whole, h100).stages if s.kind == "grpo")
    assert not unfit.fits and unfit.memory_gb > 80
    shape = cost.KNOWN_MODELS["allenai/OLMo-2-0425-1B-Instruct"]
    seq, micro, d, layers = 4096, 4, shape.d_model, shape.n_layers
    saved = shape.train_memory(micro, seq, fp32=False) - shape.train_memory(micro, seq, fp32=False, checkpointed=True)
    assert saved == (layers - 1) * 34 * seq * micro * d - layers * 2 * seq * micro * d  # hand count


def test_bad_estimate_input_is_exit_2():
    spec = str(ROOT / "experiments" / "quickstart.yaml")
    for args, words in ((["--gpu", "V100X"], "unknown GPU"), (["--mfu", "1.5"], "--mfu 1.5")):
        res = CliRunner().invoke(app, ["plan", spec, "--estimate", *args])
        assert res.exit_code == 2 and words in res.output, res.output


def _grid(param: str, choices: list) -> list:
    from synpro import search

    grid = parse_spec(TINY.replace("arms: [{kind: repetition}]", "arms: [{kind: repetition}, {kind: oracle}]").replace(
        "search: {objective: {arm: repetition, metric: final_val_loss, direction: minimize}}",
        "reference: {kind: fixed, params: {training.lr: 3.0e-3}}\n"
        "search: {sampler: grid, objective: {arm: repetition, metric: final_val_loss, direction: minimize},\n"
        f"         params: {{{param}: {{type: categorical, choices: {choices}}}}}}}"))
    return [grid.with_params(p) for p in search.grid_points(grid)]


def test_the_sweep_sums_each_grid_point_and_a_shared_fixed_reference_once():
    h100 = cost.device("H100")
    for param, choices, shared in (("budget.total_tokens", [20480, 40960], False), ("training.lr", [0.01, 0.02], True)):
        trials = _grid(param, choices)
        result = cost.estimate(trials[0], h100, trials=trials)
        reference = [s for s in result.stages if s.arm == "reference"]
        assert [s.kind for s in reference] == ["pretrain"] and reference[0].per_study
        per_point = [sum(s.flops or 0 for s in cost.trial_costs(t, h100, cost.Assumptions())) for t in trials]
        # A grid over T gives each trial its own costs and its own reference; over the lr, one reference.
        assert (per_point[1] > per_point[0]) is not shared
        expected = sum(per_point) - (reference[0].flops if shared else 0)
        assert result.totals()["sweep"]["flops"] == pytest.approx(expected), param


@pytest.mark.parametrize("spec", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_spec_estimates(spec):
    res = CliRunner().invoke(app, ["plan", str(spec), "--estimate", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["totals"]["trial"]["flops"] > 0 and all(r["kind"] for r in data["stages"])


def test_an_unknown_generator_is_exit_2_only_where_a_stage_generates(tmp_path):
    unknown = "generation: {generator: {model: /nowhere/a-model}}\n"
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY + unknown)
    assert CliRunner().invoke(app, ["plan", str(spec), "--estimate"]).exit_code == 0  # repetition generates nothing
    spec.write_text(TINY.replace("arms: [{kind: repetition}]", "arms: [{kind: repetition}, {kind: prompted}]") + unknown)
    res = CliRunner().invoke(app, ["plan", str(spec), "--estimate"])
    assert res.exit_code == 2 and "cannot size model '/nowhere/a-model'" in res.output, res.output
