"""GRPO training on a tiny random chat model: outputs, metrics, resume after a kill, trl settings from the spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generators import doc_topics, train_tokenizer
from synpro.grpo.trainer import CHECKPOINTS, GENERATOR, SAMPLES, read_metrics, train_generator, trl_kwargs
from synpro.spec import Spec

REWARDS = ("format", "length", "similarity")


@pytest.fixture(scope="module")
def organic(tmp_path_factory) -> tuple[Path, Path]:
    """The pools' hand-over the trainer reads: organic documents (JSONL) and the pretraining tokenizer."""
    root = tmp_path_factory.mktemp("organic")
    docs = doc_topics(12)
    train_tokenizer(docs, 600, ["<|endoftext|>", "<|pad|>"]).save_pretrained(str(root / "tokenizer"))
    with open(root / "docs.jsonl", "w") as f:
        for k, text in enumerate(docs):
            f.write(json.dumps({"id": f"doc{k}", "text": text}) + "\n")
    return root / "docs.jsonl", root / "tokenizer"


def make_spec(model: Path, **grpo) -> Spec:
    settings = {"steps": 3, "num_generations": 2, "prompts_per_step": 2, "heldout_prompts": 3, "eval_every": 2,
                "save_every": 1, "lr": 1e-3, "beta": 0.005, "eval_samples": 2, **grpo}
    return Spec.model_validate({
        "experiment": {"name": "grpo"}, "budget": {"unique_tokens": 1000, "epochs": 2},
        "generation": {"generator": {"model": str(model), "max_new_tokens": 12}, "window_tokens": 100,
                       "chunk_chars": 400},
        "rewards": {"weights": {"rephrase": {name: 1.0 for name in REWARDS}}, "similarity": {"continuous": True}},
        "grpo": settings})


def test_a_short_run_writes_a_loadable_generator_and_every_rewards_curve(random_model, organic, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = train_generator(make_spec(random_model), "rephrase", *organic, tmp_path, progress=True)
    shown = capsys.readouterr()
    assert "grpo rephrase" in shown.out and "3/3" in shown.out and "tok/s" in shown.out
    assert "'loss'" not in shown.out + shown.err  # trl's per-step dict print is ours to replace
    trained = AutoModelForCausalLM.from_pretrained(str(tmp_path / GENERATOR))
    base = AutoModelForCausalLM.from_pretrained(str(random_model))
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    rows = read_metrics(tmp_path)
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for row in train:
        for name in REWARDS:
            assert isinstance(row[f"rewards/{name}/mean"], float) and isinstance(row[f"rewards/{name}/std"], float)
            assert row[f"unparseable/{name}"] == 0  # offline scorers always give a score
        for key in ("reward", "kl", "completions/mean_length", "completions/clipped_ratio", "clip_ratio/region_mean"):
            assert key in row
        assert row["seconds"] > 0
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 3]
    assert set(evals[0]["rewards"]) == set(REWARDS) and 0 <= evals[0]["pass_rate"] <= 1
    samples = [json.loads(line) for line in (tmp_path / SAMPLES).read_text().splitlines()]
    assert len(samples) == 2 and all(s["source"] and s["answer"].startswith("Here is a paraphrased version:")
                                     for s in samples)
    assert not (tmp_path / CHECKPOINTS).exists()
    assert out["resumed_at"] == 0 and out["heldout_prompts"] == 3


KILLER = """
import os, signal, sys
from pathlib import Path
import torch
from transformers import TrainerCallback
sys.path.insert(0, {tests!r})
from test_trainer import early_stop_spec, make_spec
from synpro.grpo.trainer import train_generator

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

torch.set_num_threads(1)
train_generator({spec}, "rephrase", Path({docs!r}), Path({tok!r}), Path({out!r}),
                callbacks=[Kill()], progress=False)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(random_model, organic, tmp_path):
    _run_killed_at_step_2("make_spec(Path({model!r}), steps=4)", random_model, organic, tmp_path)
    assert (tmp_path / CHECKPOINTS / "checkpoint-2" / "trainer_state.json").is_file()
    out = train_generator(make_spec(random_model, steps=4), "rephrase", *organic, tmp_path, progress=False)
    assert out["resumed_at"] == 2
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]  # the killed run's lines kept once
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2, 4]
    assert (tmp_path / GENERATOR / "config.json").is_file()


def _run_killed_at_step_2(spec: str, model: Path, organic, out: Path) -> None:
    """Run train_generator in a subprocess that SIGKILLs itself once checkpoint-2 is saved."""
    script = KILLER.format(tests=str(Path(__file__).parent), spec=spec.format(model=str(model)), docs=str(organic[0]),
                           tok=str(organic[1]), out=str(out))
    paths = [str(Path(__file__).parents[2]), str(Path(__file__).parents[1])]  # the repository, tests/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]


@pytest.mark.slow
def test_a_run_killed_after_stopping_early_at_a_checkpoint_resumes_stopped(parrot_model, organic, tmp_path):
    """Stopped early at step 2 (its evaluation reached the target), checkpoint-2 saved, killed before the
    generator was: the re-run trains no further and ends as the uninterrupted run did."""
    from safetensors.torch import load_file

    reference = tmp_path / "reference"
    expected = train_generator(early_stop_spec(parrot_model), "rephrase", *organic, reference, progress=False)
    killed = tmp_path / "killed"
    _run_killed_at_step_2("early_stop_spec(Path({model!r}))", parrot_model, organic, killed)
    assert (killed / CHECKPOINTS / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (killed / GENERATOR).exists()
    out = train_generator(early_stop_spec(parrot_model), "rephrase", *organic, killed, progress=False)
    assert out["resumed_at"] == 2 and out["steps"] == 2 and out["stopped_early"]
    for key in ("steps", "pass_rate_before", "pass_rate_after", "reward_before", "reward_after"):
        assert out[key] == expected[key], key
    rows = read_metrics(killed)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2]  # the kept evaluation, not a new one
    assert (killed / SAMPLES).read_text() == (reference / SAMPLES).read_text()
    got, want = load_file(killed / GENERATOR / "model.safetensors"), load_file(reference / GENERATOR / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert not (killed / CHECKPOINTS).exists()


# trl settings that change the loss or the samples: each must be passed, and equal the spec.
LOSS_SETTINGS = {
    "learning_rate": "lr", "beta": "beta", "num_generations": "num_generations", "temperature": "temperature",
    "top_p": "top_p", "top_k": "top_k", "repetition_penalty": "repetition_penalty", "loss_type": "loss_type",
    "scale_rewards": "scale_rewards", "epsilon": "epsilon", "epsilon_high": "epsilon_high", "delta": "delta",
    "num_iterations": "num_iterations", "importance_sampling_level": "importance_sampling_level",
    "mask_truncated_completions": "mask_truncated_completions", "use_bias_correction_kl": "kl_bias_correction",
    "multi_objective_aggregation": "reward_aggregation", "max_grad_norm": "max_grad_norm",
    "weight_decay": "weight_decay", "max_completion_length": "max_completion_length",
}
PINNED_TOO = ("top_entropy_quantile", "entropy_coef", "off_policy_mask_threshold", "sync_ref_model", "min_p",
              "disable_dropout", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type", "warmup_steps",
              "reward_weights", "seed", "gradient_accumulation_steps", "steps_per_generation", "bf16")


@pytest.mark.parametrize("grpo", [
    {},  # the paper's defaults
    {"lr": 2e-5, "beta": 0.0, "num_generations": 4, "prompts_per_step": 3, "micro_batch_size": 6, "temperature": 0.7,
     "top_p": 0.95, "top_k": 50, "loss_type": "dapo", "scale_rewards": "none", "epsilon": 0.1, "epsilon_high": 0.28,
     "delta": 1.5, "num_iterations": 2, "importance_sampling_level": "sequence", "mask_truncated_completions": True,
     "kl_bias_correction": True, "reward_aggregation": "normalize_then_sum", "max_grad_norm": 0.5,
     "weight_decay": 0.01, "max_completion_length": 64, "repetition_penalty": 1.1, "lr_schedule": "constant"},
])
def test_every_trl_loss_setting_comes_from_the_spec(random_model, tmp_path, grpo):
    from trl import GRPOConfig

    spec = make_spec(random_model, **grpo)
    kwargs = trl_kwargs(spec, tmp_path, [1.0, 2.0, 0.5])
    assert set(LOSS_SETTINGS) | set(PINNED_TOO) <= set(kwargs)  # passed explicitly, never trl's default
    config = GRPOConfig(**kwargs)
    g = spec.grpo
    for trl_name, ours in LOSS_SETTINGS.items():
        want = getattr(g, ours)
        if ours == "epsilon_high" and want is None:
            want = g.epsilon
        if ours == "max_completion_length" and want is None:
            want = spec.generation.generator.max_new_tokens
        assert getattr(config, trl_name) == want, trl_name
    assert config.reward_weights == [1.0, 2.0, 0.5]
    assert config.generation_batch_size == g.prompts_per_step * g.num_generations
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps == config.generation_batch_size
    assert config.warmup_steps == round(g.warmup_ratio * g.steps)
    assert config.lr_scheduler_type == ("cosine_with_min_lr" if g.lr_schedule == "cosine" else "constant_with_warmup")
    assert config.bf16 is False and config.report_to in ("none", [], ["none"])


def test_a_lora_run_saves_a_merged_plain_generator(random_model, organic, tmp_path):
    pytest.importorskip("peft", reason="LoRA needs peft (synpro[hf])")
    from transformers import AutoModelForCausalLM

    spec = make_spec(random_model, steps=2, eval_every=0, lora={"rank": 4, "alpha": 8})
    train_generator(spec, "rephrase", *organic, tmp_path, progress=False)
    assert not (tmp_path / GENERATOR / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(str(tmp_path / GENERATOR))
    base = AutoModelForCausalLM.from_pretrained(str(random_model))
    assert trained.state_dict().keys() == base.state_dict().keys()
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))


def early_stop_spec(model: Path) -> Spec:
    """A run the parrot stops at its first evaluation during training (step 2 of 6): it passes untrained."""
    spec = make_spec(model, steps=6, eval_every=2, target_pass_rate=0.01, lr=1e-6, beta=0.0)
    return spec.with_params({"generation.generator.max_new_tokens": 80, "generation.operations": {
        "rephrase": {"kind": "rephrase", "min_chars": 10, "min_length_ratio": 0, "min_similarity": -1}}})


def test_a_target_pass_rate_stops_training_at_the_first_evaluation_that_reaches_it(parrot_model, organic, tmp_path):
    from synpro.grpo.trainer import run_settings

    spec = early_stop_spec(parrot_model)
    out = train_generator(spec, "rephrase", *organic, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[0]["pass_rate"] > 0  # the parrot passes untrained: the first evaluation after step 0 stops it
    assert [r["step"] for r in evals] == [0, 2] and out["steps"] == 2 and out["stopped_early"]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert out["pass_rate_after"] == evals[-1]["pass_rate"]
    assert len((tmp_path / SAMPLES).read_text().splitlines()) == 2 and (tmp_path / GENERATOR).is_dir()
    # where a run stops depends on the interval, so the interval is part of what the generator is
    assert "eval_every" in run_settings(spec) and "eval_every" not in run_settings(make_spec(parrot_model))


def test_a_target_pass_rate_needs_evaluations_during_training(random_model):
    with pytest.raises(ValueError, match="target_pass_rate"):
        make_spec(random_model, eval_every=0, target_pass_rate=0.8)


def test_gpu_memory_knobs_change_no_key_and_leave_a_cpu_run_alone(random_model, tmp_path):
    """Micro batch, gradient checkpointing and vLLM's mode and memory share decide whether a run fits a GPU,
    never what it learns: no stage key holds them, and on a CPU the unset ones keep the run as it was."""
    from synpro.generation.synthetic import set_config
    from synpro.grpo.trainer import stage_config

    spec = make_spec(random_model)
    gpu = spec.with_params({"grpo.gradient_checkpointing": True, "grpo.vllm_mode": "server",
                            "grpo.vllm_server_url": "http://gpu7:8000", "grpo.vllm_gpu_memory_utilization": 0.5,
                            "grpo.vllm_max_model_length": 4096, "grpo.micro_batch_size": 2,
                            "generation.generator.gpu_memory_utilization": 0.8,
                            "generation.generator.max_num_seqs": 64,
                            "generation.generator.enable_prefix_caching": True})
    assert stage_config(gpu, "rephrase") == stage_config(spec, "rephrase")
    assert set_config(gpu, "rephrase") == set_config(spec, "rephrase")
    assert spec.content_hash() == make_spec(random_model).content_hash()
    cpu = trl_kwargs(spec, tmp_path, [1.0, 1.0, 1.0])
    assert cpu["gradient_checkpointing"] is False and cpu["bf16"] is False
    assert cpu["per_device_train_batch_size"] == spec.grpo.completions_per_step  # one pass, as before
    assert (cpu["vllm_mode"], cpu["vllm_gpu_memory_utilization"]) == ("colocate", 0.3)  # explicit, not trl's
    asked = trl_kwargs(gpu, tmp_path, [1.0, 1.0, 1.0], vllm=True)
    assert (asked["vllm_mode"], asked["vllm_server_base_url"], asked["vllm_gpu_memory_utilization"],
            asked["vllm_max_model_length"], asked["gradient_checkpointing"]) == (
        "server", "http://gpu7:8000", 0.5, 4096, True)
    assert asked["per_device_train_batch_size"] == 2 and asked["gradient_accumulation_steps"] == 2


def test_under_bnpo_the_micro_batch_weighs_tokens_and_keys_the_run(random_model):
    from synpro.grpo.trainer import stage_config

    bnpo = make_spec(random_model, loss_type="bnpo")
    assert stage_config(bnpo.with_params({"grpo.micro_batch_size": 2}), "rephrase") != stage_config(bnpo, "rephrase")
