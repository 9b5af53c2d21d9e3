"""train_generator: one operation's generator trained with trl's GRPOTrainer, resumable, with its curves.

The folder it works in holds, when finished:
- `generator/`: the trained generator, an HF folder (LoRA merged in) that the synthesize stage loads;
- `metrics.jsonl`: one `{"kind": "train", "step", "seconds", <trl's logs>}` line per step (every reward's
  `rewards/<name>/mean` and `/std`, `reward` = the weighted total, `kl`, `completions/mean_length`,
  `completions/clipped_ratio`, `clip_ratio/*`, `frac_reward_zero_std`, `loss`, `learning_rate`, and
  `unparseable/<name>`: each reward's scores so far that its judge's answer could not give), and
  `{"kind": "eval", "step", "pass_rate", "reward_mean", "rewards", "failures"}` lines for the held-out
  prompts at step 0, every `eval_every` steps and at the end;
- `samples.jsonl`: a few held-out answers of the final generator next to their sources.

A killed run resumes from its last complete checkpoint (`checkpoints/checkpoint-N`, model, optimizer,
scheduler and RNG state; a checkpoint is complete once its `trainer_state.json` exists, which the Trainer
writes last), and the metric lines past N are dropped first so the file reads as one run. Checkpoints are
deleted once the generator is saved.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from synpro.core.fs import atomic_dir, write_atomic
from synpro.errors import InputError

if TYPE_CHECKING:
    from synpro.generation.operations.base import Operation
    from synpro.influence.service import InfluenceSource
    from synpro.rewards.base import Reward
    from synpro.spec import Spec

VERSION = 1
GENERATOR, METRICS, SAMPLES, CHECKPOINTS = "generator", "metrics.jsonl", "samples.jsonl", "checkpoints"
# grpo settings that change how fast or how visibly a run goes, never the trained generator.
SPEED_ONLY = frozenset({"micro_batch_size", "eval_every", "eval_samples", "save_every", "backend",
                        "gradient_checkpointing", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_server_url",
                        "vllm_max_model_length"})
# On CUDA, unset knobs take what fits a 1.5B policy beside its reference model and a colocated vLLM on one 80 GB
# GPU: bf16 weights and AdamW states (~12 GB), activations recomputed, 4 completions of ~4k tokens per forward
# pass (their fp32 logits over a 100k vocabulary are ~7 GB, the largest tensor), vLLM at 30% of the memory.
CUDA_MICRO_BATCH = 4
VLLM_MEMORY_SHARE = 0.3
# trl settings of the loss that the spec does not expose, pinned to the original GRPO (off) so that a trl
# release changing their defaults cannot change results.
PINNED = {"top_entropy_quantile": 1.0, "entropy_coef": 0.0, "use_adaptive_entropy": False,
          "off_policy_mask_threshold": None, "sync_ref_model": False, "disable_dropout": False,
          "cast_lm_head_to_fp32": False, "min_p": None, "generation_kwargs": None,
          "vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": "sequence_mask",
          "vllm_importance_sampling_clip_max": 3.0, "vllm_importance_sampling_clip_min": None}


# ---- what a run is (no heavy imports: the stage key is built from these) --------------------------

def training_operation(spec: "Spec", op_name: str) -> "Operation":
    """The operation as GRPO prompts it: grpo.prefill_heading, when set, overrides the operation's own."""
    from synpro.rewards.scoring import operation_of

    op = operation_of(spec, op_name)
    prefill = spec.grpo.prefill_heading
    return op if prefill is None else replace(op, prefill_heading=prefill)


def base_spec(spec: "Spec") -> "Spec":
    """The spec with grpo.base_model as its generator, so the generation module finds and converts it."""
    name = spec.grpo.base_model or spec.generation.generator.model
    return spec.with_params({"generation.generator.model": name, "generation.generator.backend": "transformers"})


def run_settings(spec: "Spec") -> dict[str, Any]:
    """The grpo section as it takes effect: defaults resolved, speed-only knobs left out."""
    g = spec.grpo
    # With a target pass rate the evaluation interval decides where a run stops: then it shapes the generator.
    observation_only = SPEED_ONLY - ({"eval_every"} if g.target_pass_rate is not None else set())
    # bnpo averages the loss over each micro batch's tokens (trl 0.18's default, as the release ran it): there
    # the micro batch weighs tokens, so it shapes the generator.
    observation_only -= {"micro_batch_size"} if g.loss_type == "bnpo" else set()
    return {**g.model_dump(mode="json", exclude=set(observation_only)),
            "seed": spec.experiment.seed if g.seed is None else g.seed,
            "max_completion_length": g.max_completion_length or spec.generation.generator.max_new_tokens,
            "epsilon_high": g.epsilon if g.epsilon_high is None else g.epsilon_high}


def stage_config(spec: "Spec", op_name: str) -> dict[str, Any]:
    """Everything that shapes the trained generator: settings, operation, rewards and weights, base weights,
    how prompts are cut. An upstream stage (probe, previous round) enters the key through the inputs."""
    from synpro.generation.generator import model_identity
    from synpro.rewards.scoring import build_rewards, reward_settings

    op = training_operation(spec, op_name)
    rewards, weights = build_rewards(spec, op_name, check=False)
    settings = reward_settings(rewards, weights)
    if "influence" in settings:  # the scorer's location is an input; how it scores is config
        settings["influence"].update(scorer=None, max_tokens=spec.influence.max_tokens,
                                     **({"precision": spec.influence.precision} if spec.influence.precision else {}))
    g = spec.generation
    return {"version": VERSION, "grpo": run_settings(spec),
            "operation": {"kind": g.operations[op_name].kind if op_name in g.operations else op_name,
                          "system_prompt": op.system_prompt, "prompt": op.prompt, "heading": op.heading,
                          "prefix": op.prefix, "filters": vars(op.filters)},
            "rewards": settings, "base": model_identity(base_spec(spec)),
            "prompts": {"window_tokens": g.window_tokens, "chunk_chars": g.chunk_chars}}


def use_vllm(spec: "Spec") -> bool:
    choice = spec.grpo.backend
    if choice != "auto":
        return choice == "vllm"
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def trl_kwargs(spec: "Spec", output_dir: Path, weights: Sequence[float], *, vllm: bool = False) -> dict[str, Any]:
    """GRPOConfig's arguments: every setting that changes the loss or the samples comes from the spec (or
    PINNED), none from trl's defaults. Progress is ours (GrpoProgress), not trl's tqdm."""
    import torch

    g, run = spec.grpo, run_settings(spec)
    cuda = torch.cuda.is_available()
    micro = g.micro_batch_size or (math.gcd(CUDA_MICRO_BATCH, g.completions_per_step) if cuda
                                   else g.completions_per_step)
    accumulation = g.completions_per_step // micro
    bf16 = g.precision == "bf16" and cuda
    checkpointing = cuda if g.gradient_checkpointing is None else g.gradient_checkpointing
    cosine = g.lr_schedule == "cosine"
    return {
        "output_dir": str(output_dir), "max_steps": g.steps, "seed": run["seed"], "data_seed": run["seed"],
        # optimizer and schedule
        "learning_rate": g.lr, "optim": "adamw_torch", "weight_decay": g.weight_decay, "adam_beta1": g.betas[0],
        "adam_beta2": g.betas[1], "adam_epsilon": 1e-8, "max_grad_norm": g.max_grad_norm,
        "lr_scheduler_type": "cosine_with_min_lr" if cosine else "constant_with_warmup",
        "lr_scheduler_kwargs": {"min_lr_rate": g.min_lr_ratio} if cosine else {},
        "warmup_steps": round(g.warmup_ratio * g.steps),
        # batch: one optimizer step = prompts_per_step prompts × num_generations completions
        "per_device_train_batch_size": micro, "gradient_accumulation_steps": accumulation,
        "steps_per_generation": accumulation, "num_generations": g.num_generations, "shuffle_dataset": True,
        # sampling
        "temperature": g.temperature, "top_p": g.top_p, "top_k": g.top_k, "repetition_penalty": g.repetition_penalty,
        "max_completion_length": run["max_completion_length"],
        # the loss
        "beta": g.beta, "loss_type": g.loss_type, "scale_rewards": g.scale_rewards, "epsilon": g.epsilon,
        "epsilon_high": run["epsilon_high"], "delta": g.delta, "num_iterations": g.num_iterations,
        "importance_sampling_level": g.importance_sampling_level,
        "mask_truncated_completions": g.mask_truncated_completions, "use_bias_correction_kl": g.kl_bias_correction,
        "multi_objective_aggregation": g.reward_aggregation, "reward_weights": list(weights), **PINNED,
        # machinery
        "bf16": bf16, "fp16": False, "activation_checkpointing": False, "model_init_kwargs": {
            "dtype": "bfloat16" if bf16 else "float32"},
        "gradient_checkpointing": checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        "use_vllm": vllm, "vllm_mode": g.vllm_mode or "colocate",
        "vllm_gpu_memory_utilization": g.vllm_gpu_memory_utilization or VLLM_MEMORY_SHARE,
        "vllm_server_base_url": g.vllm_server_url, "vllm_max_model_length": g.vllm_max_model_length,
        "remove_unused_columns": False,
        "report_to": "none", "logging_steps": 1, "save_strategy": "steps", "save_steps": g.save_every,
        "save_total_limit": 2, "eval_strategy": "no", "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(), "disable_tqdm": True, "log_completions": False,
    }


# ---- the run ------------------------------------------------------------------------------------

class _Prefilled:
    """A reward seeing the whole answer: the pre-filled start (the heading) plus the completion, as the
    synthesize stage assembles it. trl logs it under the reward's own name."""

    def __init__(self, reward: "Reward", prefix: str):
        self.reward, self.prefix = reward, prefix
        self.__name__ = reward.__name__

    def __call__(self, completions: Sequence[Any], source: Sequence[str], **columns: Any) -> list[float]:
        from synpro.rewards.base import as_text

        return self.reward([self.prefix + as_text(c) for c in completions], source=source)


def train_generator(spec: "Spec", op_name: str, organic_docs: Path, tokenizer_dir: Path, folder: Path, *,
                    init_folder: Path | None = None, influence: "InfluenceSource | None" = None,
                    callbacks: Sequence[Any] = (), progress: bool = True) -> dict[str, Any]:
    """Train (or resume training) the generator of op_name in folder; returns the run's summary metrics.

    organic_docs / tokenizer_dir: the pools' organic documents and pretraining tokenizer (for the windows);
    init_folder: the weights to start from (the previous round's generator), default the base model;
    influence: θ and θ′ for the influence reward (needed when the operation's weights include it);
    callbacks: further transformers TrainerCallbacks (observers: an MLflow sink, say)."""
    from synpro.generation.backends import Sampling
    from synpro.grpo.prompts import prompt_rows, render
    from synpro.rewards.scoring import build_rewards

    from synpro.core.devices import allow_tf32

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    allow_tf32("auto")  # the fp32 parts (all of a fp32 run, the loss and optimizer otherwise) on CUDA
    g, run = spec.grpo, run_settings(spec)
    op = training_operation(spec, op_name)
    rewards, weights = build_rewards(spec, op_name, influence=influence)
    start = Path(init_folder) if init_folder is not None else _base_folder(spec)
    tokenizer = _tokenizer(start, spec)
    train_rows, heldout = prompt_rows(spec, op, organic_docs, tokenizer_dir, run["seed"])
    sampling = Sampling(temperature=g.temperature, top_p=g.top_p, max_new_tokens=run["max_completion_length"],
                        seed=run["seed"])

    def held_out(model, step: int, samples: int = 0):
        from synpro.grpo.evaluation import evaluate

        result = evaluate(model, tokenizer, op, heldout, rewards, weights, sampling,
                          batch_size=g.micro_batch_size or 8, samples=samples)
        append_line(folder / METRICS, result.row(step))
        return result

    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from synpro.grpo.callbacks import GrpoProgress, MetricsLog

    dataset = Dataset.from_list([{"prompt": render(tokenizer, r["messages"]), "source": r["source"]}
                                 for r in train_rows])
    checkpoint = _last_checkpoint(folder / CHECKPOINTS)
    resumed = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0
    # The killed attempt's lines up to its checkpoint stay; a final evaluation is redone after training.
    rows = [r for r in read_metrics(folder)
            if r["step"] <= resumed and not (r["kind"] == "eval" and r["step"] == g.steps)]
    write_atomic(folder / METRICS, "".join(json.dumps(r) + "\n" for r in rows))
    log = MetricsLog(lambda row: append_line(folder / METRICS, row), held_out, g.eval_every, g.steps,
                     target=g.target_pass_rate, samples=g.eval_samples,
                     unparseable=lambda: {r.__name__: r.failures for r in rewards})
    shown = [GrpoProgress(op_name, g.steps, g.completions_per_step)] if progress else []
    with _trl_deprecations_hidden():
        trainer = GRPOTrainer(model=str(start), reward_funcs=[_Prefilled(r, op.prefix) for r in rewards],
                              args=GRPOConfig(**trl_kwargs(spec, folder / CHECKPOINTS, weights, vllm=use_vllm(spec))),
                              train_dataset=dataset, processing_class=tokenizer, callbacks=[log, *shown, *callbacks],
                              peft_config=_lora(g.lora))
    for printer in (PrinterCallback, ProgressCallback):  # every step's logs as a dict: metrics.jsonl has them
        trainer.remove_callback(printer)
    if not any(r["kind"] == "eval" and r["step"] == 0 for r in rows):
        held_out(trainer.model, 0)
    started = time.perf_counter()
    stopped = _stopped_at(rows, resumed, g) if checkpoint else None
    if stopped is not None:
        # The killed run had stopped early here (its evaluation reached the target) and was killed before
        # saving its generator: take the checkpoint's weights and that evaluation, and train no further,
        # as the uninterrupted run did. Its samples are drawn again (seeded, so the same answers).
        with _trl_deprecations_hidden():
            trainer._load_from_checkpoint(str(checkpoint))
        from synpro.grpo.evaluation import HeldOut, evaluate

        again = evaluate(trainer.model, tokenizer, op, heldout, rewards, weights, sampling,
                         batch_size=g.micro_batch_size or 8, samples=g.eval_samples)
        final = HeldOut(**{k: stopped[k] for k in ("pass_rate", "reward_mean", "rewards", "failures", "seconds")},
                        samples=again.samples)
        trained = resumed
    else:
        with _trl_deprecations_hidden():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trained = trainer.state.global_step
        final = held_out(trainer.model, trained, samples=g.eval_samples) if trained >= g.steps else log.reached
    seconds = time.perf_counter() - started
    write_atomic(folder / SAMPLES, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in final.samples))
    _save_generator(trainer.model, tokenizer, folder / GENERATOR)
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
    first = next(r for r in read_metrics(folder) if r["kind"] == "eval" and r["step"] == 0)
    steps = [r for r in read_metrics(folder) if r["kind"] == "train"]
    return {"steps": trained, "stopped_early": trained < g.steps, "resumed_at": resumed,
            "train_prompts": len(train_rows), "heldout_prompts": len(heldout),
            "pass_rate_before": first["pass_rate"], "pass_rate_after": final.pass_rate,
            "reward_before": first["reward_mean"], "reward_after": final.reward_mean,
            "seconds_per_step": sum(r["seconds"] for r in steps) / max(len(steps), 1),
            "train_seconds": seconds, **{f"unparseable/{r.__name__}": r.failures for r in rewards}}


def _stopped_at(rows: Sequence[dict[str, Any]], step: int, g) -> dict[str, Any] | None:
    """The kept evaluation row at `step` that reached the target pass rate (so the run stopped there), if any:
    an evaluation during training (0 < step < g.steps) with a target set."""
    if g.target_pass_rate is None or not 0 < step < g.steps:
        return None
    return next((r for r in rows if r["kind"] == "eval" and r["step"] == step
                 and r["pass_rate"] >= g.target_pass_rate), None)


@contextmanager
def _trl_deprecations_hidden():
    """trl calls a transformers alias deprecated in v5 (model and PEFT setup, training): nothing a user can do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The metric lines of a run folder; a line torn by a kill is dropped."""
    path = Path(folder) / METRICS
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def append_line(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _base_folder(spec: "Spec") -> Path:
    from synpro.generation.generator import model_folder

    return model_folder(base_spec(spec))


def _tokenizer(folder: Path, spec: "Spec"):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise InputError.one(f"cannot load the generator's tokenizer from {folder}: {exc}", file=spec.source_file,
                             key="grpo.base_model") from None
    if tokenizer.chat_template is None:
        raise InputError.one(f"the generator at {folder} has no chat template; use an instruct model",
                             file=spec.source_file, key="grpo.base_model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _lora(lora):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def _last_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones (a kill while saving) are removed."""
    if not root.is_dir():
        return None
    found = sorted((p for p in root.glob("checkpoint-*") if p.name.rsplit("-", 1)[1].isdigit()),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for path in found:
        if not (path / "trainer_state.json").is_file():
            shutil.rmtree(path)
    return next((p for p in reversed(found) if p.exists()), None)


def _save_generator(model, tokenizer, target: Path) -> None:
    """The trained weights as a plain HF folder (LoRA merged in), written next to the target and renamed."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with atomic_dir(target) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
