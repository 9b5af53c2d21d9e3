"""The experiment spec: YAML in, typed pydantic models out, and back to YAML.

Every later layer (plan, stages, store, tracking) reads a validated `Spec`; nothing reads raw YAML.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synpro.core.fs import sqlite_url
from synpro.core.hashing import stable_hash
from synpro.errors import InputError, Problem
from synpro.models import ModelSpec

CHINCHILLA_TOKENS_PER_PARAM = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExperimentSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    seeds: list[int] | None = Field(default=None, min_length=1, description=(
        "training seeds (init and data order): every arm trains once per seed; default [seed]"))
    replicates: int | None = Field(default=None, ge=1, description="shorthand for seeds: seed .. seed+N-1")
    data_seed: int | None = Field(default=None, description=(
        "seeds the pools, the oracle's extra pool and generation, shared by every training seed; "
        "default: the first training seed"))
    workdir: str = "runs/{name}"
    description: str = ""

    @model_validator(mode="after")
    def _one_way_to_seed(self) -> "ExperimentSpec":
        if self.seeds is not None and self.replicates is not None:
            raise ValueError("give experiment.seeds or experiment.replicates, not both")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiment.seeds repeats a seed: {self.seeds}")
        return self

    def training_seeds(self) -> list[int]:
        """The seeds every arm trains with, in order."""
        if self.seeds is not None:
            return list(self.seeds)
        return [self.seed + i for i in range(self.replicates or 1)]

    def resolved_data_seed(self) -> int:
        return self.training_seeds()[0] if self.data_seed is None else self.data_seed

    def resolved_workdir(self) -> Path:
        return Path(self.workdir.format(name=self.name))


class CorpusSpec(_Strict):
    """Where organic text comes from. Relative paths are relative to the spec file's folder."""

    source: Literal["builtin", "jsonl", "parquet", "textdir", "hf"] = "builtin"
    name: str | None = "python-docs"  # builtin corpus name
    path: str | None = None  # jsonl / parquet file or text folder
    dataset: str | None = None  # HF dataset id or local dataset folder
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    min_chars: int = Field(default=200, ge=0)
    workers: int | None = Field(default=None, ge=1, description=(
        "tokenizer processes for the pools and extra stages; default: this machine's cores (one for "
        "small pools). Speed only: the pools are the same for any count, and no stage key holds it"))
    shard_tokens: int = Field(default=1 << 26, ge=1024, description=(
        "tokens per pool shard (128 MB as uint16, 256 MB as uint32: each is hashed once); a killed pools or extra stage resumes from its last "
        "complete shard. Layout only: no stage key holds it"))

    # How the pools are made, not what they hold (the same pools for any value): in no key.
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"workers", "shard_tokens"})

    def content(self) -> dict[str, Any]:
        """The settings that decide what the corpus yields: what stage keys and trial hashes take."""
        return self.model_dump(mode="json", exclude=set(self.RUNTIME_FIELDS))

    @model_validator(mode="after")
    def _source_fields(self) -> "CorpusSpec":
        need = {"jsonl": "path", "parquet": "path", "textdir": "path", "hf": "dataset", "builtin": "name"}[self.source]
        if getattr(self, need) in (None, ""):
            raise ValueError(f"corpus source {self.source!r} needs `{need}`")
        return self


class TokenizerSpec(_Strict):
    """Train a byte-level BPE on the organic pool, or load a named/local HF tokenizer."""

    kind: Literal["train", "pretrained"] = "train"
    vocab_size: int = Field(default=4096, ge=260)
    name: str | None = None

    @model_validator(mode="after")
    def _name_for_pretrained(self) -> "TokenizerSpec":
        if self.kind == "pretrained" and not self.name:
            raise ValueError("a pretrained tokenizer needs `name` (HF id or local folder)")
        return self


class BudgetSpec(_Strict):
    """The data-bound setting: U unique organic tokens, T total tokens seen by every arm."""

    unique_tokens: int | None = Field(default=None, gt=0)
    unique_fraction: float | None = Field(default=None, gt=0, le=1)
    total_tokens: int | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    validation_tokens: int = Field(default=20_000, gt=0)

    @model_validator(mode="after")
    def _one_of_each(self) -> "BudgetSpec":
        if (self.unique_tokens is None) == (self.unique_fraction is None):
            raise ValueError("give exactly one of unique_tokens or unique_fraction (of Chinchilla's 20·N)")
        if (self.total_tokens is None) == (self.epochs is None):
            raise ValueError("give exactly one of total_tokens or epochs (passes over the unique tokens)")
        return self

    def resolve(self, model: ModelSpec) -> tuple[int, int]:
        """(U, T) in tokens for this model, as asked; `Spec.resolved_budget()` is what runs take."""
        unique = self.unique_tokens or int(self.unique_fraction * CHINCHILLA_TOKENS_PER_PARAM * model.non_embedding_params())
        total = self.total_tokens or int(self.epochs * unique)
        return unique, total


@dataclass(frozen=True)
class ResolvedBudget:
    """The budget as runs take it (from `Spec.resolved_budget()`).

    T is rounded up to whole optimizer steps: the trainer takes whole steps, so the budget is always
    reached and the T reported is the T trained. U stays as asked (the organic pool); the loader
    trains on its whole `seq_len` sequences, `trained_unique`. The oracle's extra pool is
    `extra` = T - trained_unique, so organic + extra fill the run exactly: the oracle never repeats a
    token, and repetition makes exactly `epochs` passes (T/U as asked, within one batch).
    """

    unique: int
    total: int
    steps: int
    trained_unique: int
    requested_total: int

    @property
    def extra(self) -> int:
        """Tokens of the oracle's extra pool."""
        return self.total - self.trained_unique

    @property
    def epochs(self) -> float:
        """Passes over U that repetition makes."""
        return self.total / self.trained_unique


class TrainingSpec(_Strict):
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_tokens: int = Field(default=20_000, ge=0)
    batch_size: int = Field(default=16, gt=0, description="sequences per optimizer step")
    micro_batch_size: int | None = Field(default=None, gt=0, description="sequences per forward pass")
    seq_len: int = Field(default=128, ge=8)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0)
    z_loss: float = Field(default=0.0, ge=0, description="coefficient of mean(logsumexp(logits)^2) added to "
                          "the training loss (OLMo-2: 1e-5); keeps the softmax normaliser near 1")
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    eval_interval_tokens: int = Field(default=50_000, gt=0)
    checkpoint_minutes: float | None = Field(default=None, gt=0, description=(
        "also checkpoint every N minutes of wall-clock time between evaluations (a time-limit kill loses at "
        "most that); not part of the run's identity: results are the same"))
    device: str = "auto"
    parallelism: Literal["ddp", "fsdp"] = Field(default="ddp", description=(
        "how torchrun's ranks (resources.pretrain.processes) share the model: ddp (a full copy each) or fsdp "
        "(FSDP2 fully_shard per block: parameters, gradients and optimizer state sharded, for the large "
        "presets). fsdp enters the run's key: its reductions round differently from ddp's"))
    activation_checkpointing: bool = Field(default=False, description=(
        "recompute each block's activations in the backward pass (less memory, ~30% more compute); "
        "the same results, so not part of the run's identity"))

    # Where and how a run computes, not what: left out of its stage key and run.json (see identity).
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("device", "compile", "checkpoint_minutes", "activation_checkpointing")

    def identity(self) -> dict[str, Any]:
        """The fields that determine a run's results (its stage key's part): all but RUNTIME_FIELDS, and
        `parallelism` only when it is fsdp (so every key from before the field stays as it was)."""
        drop = {*self.RUNTIME_FIELDS, *(("parallelism",) if self.parallelism == "ddp" else ())}
        return self.model_dump(mode="json", exclude=drop)

    @model_validator(mode="after")
    def _micro_divides(self) -> "TrainingSpec":
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size ({micro})")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


class GeneratorSpec(_Strict):
    """The LLM that rewrites organic text. `smollm2-135m-instruct` is packaged and works offline."""

    model: str = "smollm2-135m-instruct"  # a packaged name, an HF model id or a local folder
    backend: Literal["auto", "transformers", "continuous", "ctranslate2", "vllm", "openai"] = "auto"
    endpoint: str | None = None  # OpenAI-compatible base URL (backend openai), e.g. a `vllm serve`
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_new_tokens: int = Field(default=512, gt=0)
    batch_size: int = Field(default=8, gt=0)
    concurrency: int = Field(default=8, gt=0, description="requests in flight (backend openai)")
    max_retries: int = Field(default=3, ge=0)
    timeout_seconds: float = Field(default=120, gt=0)
    # backend vllm (speed and memory only, in no key); unset: vLLM's own defaults
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1, description=(
        "vllm: share of each GPU's memory the engine may take (vLLM's default 0.9)"))
    max_num_seqs: int | None = Field(default=None, gt=0, description="vllm: sequences decoded together per engine")
    enable_prefix_caching: bool | None = Field(default=None, description=(
        "vllm: reuse the KV cache of a shared prompt prefix (every chunk shares the system prompt and task)"))

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> "GeneratorSpec":
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("[endpoint] backend 'openai' needs `endpoint` (an OpenAI-compatible base URL)")
        return self


class OperationSpec(_Strict):
    """One rewrite operation; unset fields take the registered operation's defaults."""

    kind: str
    preset: Literal["release"] | None = Field(default=None, description=(
        "named prompt texts (synpro.generation.operations.presets): `release`, the authors' release; none: the "
        "operation's own, tuned on the 135M CPU generator. Explicit fields below override it"))
    system_prompt: str | None = None
    prompt: str | None = None  # must contain a {text} slot
    heading: str | None = None
    prefill_heading: bool | None = None  # the answer starts with the heading and the generator continues it
    min_chars: int | None = Field(default=None, ge=0)
    min_length_ratio: float | None = Field(default=None, ge=0)
    max_length_ratio: float | None = Field(default=None, gt=0)
    min_similarity: float | None = Field(default=None, ge=-1, le=1)  # MiniLM cosine; -1 turns the check off
    max_repetition: float | None = Field(default=None, ge=0, le=1)  # share of repeated word 4-grams

    @model_validator(mode="after")
    def _slotted(self) -> "OperationSpec":
        if self.prompt is not None and "{text}" not in self.prompt:
            raise ValueError("[prompt] the prompt template has no {text} slot for the organic text")
        return self


class GenerationSpec(_Strict):
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)
    operations: dict[str, OperationSpec] = Field(
        default_factory=lambda: {"rephrase": OperationSpec(kind="rephrase"), "reformat": OperationSpec(kind="reformat")})
    window_tokens: int = Field(default=2048, gt=0, description="organic windows, in pretraining tokens")
    chunk_chars: int = Field(default=7000, gt=0, description="longest piece of a window given to the generator")
    max_windows: int | None = Field(default=None, gt=0, description="rewrite only the first N windows")


class EvalTaskSpec(_Strict):
    """One downstream task: an lm-eval task name (or a SynPro builtin) and the accuracy it reports."""

    name: str = Field(min_length=1)
    metric: Literal["acc", "acc_norm"] = "acc"  # acc_norm: choices ranked by log-likelihood per byte


class BuiltinTaskSpec(_Strict):
    """How the offline cloze task is cut from held-out documents (synpro.evaluation.builtin)."""

    items: int = Field(default=200, gt=0)
    choices: int = Field(default=4, ge=2, description="the true continuation plus choices-1 distractors")
    context_chars: int = Field(default=160, gt=0, description="passage shown before the choices")
    continuation_chars: int = Field(default=64, gt=0, description="length of every choice")


class EvalSpec(_Strict):
    """Zero-shot multiple-choice evaluation of checkpoints with EleutherAI's lm-eval."""

    tasks: list[EvalTaskSpec] = []  # none: loss only; e.g. [{name: synpro_cloze}] offline, or lm-eval task names
    interval_tokens: int | None = Field(default=None, gt=0,
                                        description="default: training.eval_interval_tokens; a multiple of it")
    batch_size: int = Field(default=32, gt=0, description="sequences per likelihood forward pass")
    limit: int | None = Field(default=None, gt=0, description="score only the first N items of each task")
    device: str | None = Field(default=None, description="default: training.device (auto: CUDA when present)")
    precision: Literal["fp32", "bf16"] | None = Field(default=None, description=(
        "checkpoint weights while scoring; none: fp32 (TF32 matmuls on CUDA)"))
    builtin: BuiltinTaskSpec = Field(default_factory=BuiltinTaskSpec)

    @model_validator(mode="after")
    def _unique_tasks(self) -> "EvalSpec":
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"[tasks] task names must be unique, got {names}")
        return self


# ---- scoring: rewards, the influence probe, influence scoring ------------------------------------

# The paper's reward weights per operation kind (method.md §6); an operation of another kind gets none.
PAPER_REWARD_WEIGHTS: dict[str, dict[str, float]] = {
    "rephrase": {"influence": 3.0, "quality": 1.0, "similarity": 1.0, "structure": 1.0, "length": 1.0, "format": 1.0},
    "reformat": {"influence": 3.0, "faithfulness": 1.0, "quality": 1.0, "format": 1.0},
}


class JudgeSpec(_Strict):
    """An LLM judge: an HF model (id or local folder, run greedily with transformers) or a model behind an
    OpenAI-compatible endpoint. The prompt's slots depend on the reward; the score is the regex's first group."""

    model: str
    endpoint: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str
    score_regex: str = r"(-?\d+(?:\.\d+)?)"
    max_new_tokens: int = Field(default=64, gt=0)
    timeout_seconds: float = Field(default=60, gt=0)
    slot_chars: dict[str, int] | None = Field(default=None, description=(
        "the first N characters of a slot's text go into the prompt, e.g. {source: 3000} (the release's "
        "faithfulness verifier sees the first 3,000 source characters); none: whole texts"))
    concurrency: int = Field(default=16, gt=0, description="requests in flight to an endpoint (speed only)")
    batch_size: int = Field(default=8, gt=0, description="prompts per generate call of a local model (speed only)")
    max_retries: int = Field(default=4, ge=0, description="retries of a request that failed transiently "
                             "(connection, timeout, 408/409/429/5xx), with exponential backoff")
    backoff_seconds: float = Field(default=1.0, ge=0, description="the first retry's wait; doubled each retry")

    # How fast the judge is reached, never what it says: in no stage key.
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"concurrency", "batch_size", "max_retries",
                                                          "backoff_seconds"})

    def identity(self, exclude_none: bool = False) -> dict[str, Any]:
        """The settings that decide a verdict: what reward settings and stage keys take."""
        return self.model_dump(mode="json", exclude=set(self.RUNTIME_FIELDS), exclude_none=exclude_none)

    @model_validator(mode="after")
    def _regex_compiles(self) -> "JudgeSpec":
        try:
            re.compile(self.score_regex)
        except re.error as exc:
            raise ValueError(f"[score_regex] not a regular expression: {exc}") from None
        return self


class _ScorerChoice(_Strict):
    scorer: Literal["offline", "llm"] = "offline"
    judge: JudgeSpec | None = None

    def settings(self) -> dict[str, Any]:
        """The settings a reward's value depends on (the judge's runtime knobs left out)."""
        out = self.model_dump(mode="json", exclude_none=True, exclude={"judge"})
        return out | ({"judge": self.judge.identity(exclude_none=True)} if self.judge is not None else {})

    @model_validator(mode="after")
    def _judge_for_llm(self) -> "_ScorerChoice":
        if self.scorer == "llm" and self.judge is None:
            raise ValueError("[judge] scorer 'llm' needs a `judge` (model, prompt, score_regex)")
        return self


class QualitySpec(_ScorerChoice):
    """offline: a fluency classifier trained on clean vs degraded paragraphs; llm: a 1-5 rater (DataMan-style)."""


class StructureSpec(_ScorerChoice):
    """offline: the source's layout (paragraphs, lists, code, headings) kept; llm: a 0/1 judge."""


class SimilaritySpec(_Strict):
    threshold: float = Field(default=0.65, ge=-1, le=1)  # paper: BERTScore-F1 > 0.65; ours: MiniLM cosine
    continuous: bool = False  # the cosine itself instead of 1/0
    scorer: Literal["minilm", "bertscore"] | None = Field(default=None, description=(
        "none or minilm: MiniLM cosine (offline); bertscore: BERTScore F1 of `model`'s layer `layer`, no idf, "
        "no baseline rescaling (the release: microsoft/deberta-large-mnli, layer 18)"))
    model: str | None = Field(default=None, description="bertscore: HF id in the cache or a local folder; "
                              "default microsoft/deberta-large-mnli")
    layer: int | None = Field(default=None, ge=0, description="bertscore: hidden layer whose token vectors "
                              "are matched; default 18 for deberta-large-mnli (bert-score's choice), else the last")


class LengthSpec(_Strict):
    max_ratio: float = Field(default=1.25, gt=0)
    min_ratio: float = Field(default=0.0, ge=0, description=(
        "paper: no lower bound (0); the rephrase filter's 0.5 keeps GRPO from learning to answer short"))

    @model_validator(mode="after")
    def _ordered(self) -> "LengthSpec":
        if self.min_ratio >= self.max_ratio:
            raise ValueError("[min_ratio] must be below max_ratio")
        return self


class FaithfulnessSpec(_ScorerChoice):
    """offline: an entry is supported when its content is close to a passage of the source (MiniLM cosine)
    and its numbers and most of its names occur in the source; llm: a 0/1 verifier per entry."""

    min_similarity: float = Field(default=0.5, ge=-1, le=1)
    min_name_overlap: float = Field(default=0.5, ge=0, le=1)
    max_entries: int = Field(default=8, gt=0)


class RewardsSpec(_Strict):
    """Weights per operation name (an operation left out gets the paper's weights for its kind) and settings."""

    weights: dict[str, dict[str, float]] = {}
    influence_min_chars: int = Field(default=500, ge=0)  # a shorter extracted output scores 0
    quality: QualitySpec = Field(default_factory=QualitySpec)
    similarity: SimilaritySpec = Field(default_factory=SimilaritySpec)
    structure: StructureSpec = Field(default_factory=StructureSpec)
    length: LengthSpec = Field(default_factory=LengthSpec)
    faithfulness: FaithfulnessSpec = Field(default_factory=FaithfulnessSpec)


class ReferenceSpec(_Strict):
    """The probe's reference task: prompt/response pairs, loss on response tokens only. The builtin set is
    made from docstrings of C-implemented functions, which no builtin corpus contains."""

    source: Literal["builtin", "jsonl", "hf"] = "builtin"
    name: str | None = "python-c-docstrings"
    path: str | None = None
    dataset: str | None = None
    split: str = "train"
    prompt_field: str = "prompt"
    response_field: str = "response"
    max_examples: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _source_fields(self) -> "ReferenceSpec":
        need = {"jsonl": "path", "hf": "dataset", "builtin": "name"}[self.source]
        if getattr(self, need) in (None, ""):
            raise ValueError(f"[{need}] reference source {self.source!r} needs `{need}`")
        return self


class ProbeSpec(_Strict):
    """θ → θ′: K AdamW steps at a constant learning rate on the reference set (paper: 100, 1e-4, wd 0.1)."""

    steps: int = Field(default=100, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    batch_size: int = Field(default=64, gt=0, description="examples per optimizer step")
    micro_batch_size: int | None = Field(default=None, gt=0, description="examples per forward pass")
    max_tokens: int = Field(default=2048, ge=8, description="longest example, prompt included")
    eval_examples: int = Field(default=64, gt=0, description="held out of the steps; the loss before -> after")
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)

    @model_validator(mode="after")
    def _micro_divides(self) -> "ProbeSpec":
        if self.batch_size % (self.micro_batch_size or self.batch_size):
            raise ValueError(f"[micro_batch_size] must divide batch_size ({self.batch_size})")
        return self


class InfluenceSpec(_Strict):
    """I(y) = L(y; θ) − L(y; θ′), mean token loss with EOS appended, padding masked."""

    max_tokens: int = Field(default=2048, ge=8)
    batch_size: int = Field(default=16, gt=0)
    url: str | None = None  # a running `synpro serve-influence`; None: score in this process
    host: str = "127.0.0.1"
    port: int = Field(default=8642, gt=0, lt=65536)
    timeout_seconds: float = Field(default=300, gt=0)
    device: str = "auto"
    precision: Literal["fp32", "bf16"] | None = Field(default=None, description=(
        "θ and θ′ weights while scoring (losses are taken in fp32 either way); none: fp32, with TF32 matmuls on "
        "CUDA"))


# ---- GRPO training of the generators (synpro.grpo) -----------------------------------------------

class LoraSpec(_Strict):
    """Train a LoRA adapter (peft) instead of every weight; the output generator has it merged in."""

    rank: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class GrpoSpec(_Strict):
    """GRPO training of a rewrite generator with trl's GRPOTrainer (method.md §2, §6).

    Defaults are the paper's (lr 1e-6 cosine to 0.1× after 10% warmup, KL β 0.005, 8 samples per prompt at
    temperature 1.0 / top-p 0.9, 16 prompts a step) and the original GRPO objective (per-sequence mean loss,
    group-scaled advantages, ε 0.2, one update per generation, the plain k3 KL). Every trl setting that
    changes the loss is passed from here, so a trl release that moves its defaults cannot move results.
    On a CPU the paper's lr moves nothing in tens of steps: CPU specs set their own `lr`."""

    base_model: str | None = Field(default=None, description="packaged name, HF id or local folder; "
                                   "default: generation.generator.model")
    init: Literal["base", "previous"] = Field(default="base", description="start every round from the base "
                                              "model (the authors) or from the previous round's generator")
    steps: int = Field(default=240, gt=0, description="optimizer steps")
    lr: float = Field(default=1e-6, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor, as a share of lr")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = Field(default=1.0, gt=0)
    beta: float = Field(default=0.005, ge=0, description="KL coefficient")
    num_generations: int = Field(default=8, ge=2, description="completions per prompt (the GRPO group)")
    prompts_per_step: int = Field(default=16, gt=0)
    micro_batch_size: int | None = Field(default=None, gt=0, description="completions per forward pass "
                                         "(speed and memory only); must divide prompts_per_step × num_generations")
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0: off")
    repetition_penalty: float = Field(default=1.0, gt=0)
    max_completion_length: int | None = Field(default=None, gt=0,
                                              description="default: generation.generator.max_new_tokens")
    prefill_heading: bool | None = Field(default=None, description="start every answer with the heading, so "
                                         "the completion is the body; default: the operation's own (ours: yes; "
                                         "the authors: no)")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = Field(default=0.2, gt=0, description="lower clipping bound of the probability ratio")
    epsilon_high: float | None = Field(default=None, gt=0, description="upper bound; default: epsilon")
    delta: float | None = Field(default=None, gt=1, description="two-sided clipping bound; None: off")
    num_iterations: int = Field(default=1, gt=0, description="updates per generated batch (μ)")
    importance_sampling_level: Literal["token", "sequence"] = "token"
    mask_truncated_completions: bool = False
    kl_bias_correction: bool = Field(default=False, description="weight the KL term by the importance ratio "
                                     "(trl ≥ 1.x default); off: the original k3 estimator")
    reward_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="bf16 only takes effect on CUDA")
    lora: LoraSpec | None = None
    heldout_prompts: int = Field(default=128, gt=0, description="prompts kept out of training for evaluation")
    eval_every: int = Field(default=20, ge=0, description="held-out evaluation every N steps (0: before and "
                            "after only); observation only, unless target_pass_rate is set")
    target_pass_rate: float | None = Field(default=None, gt=0, le=1, description=(
        "stop training at the first held-out evaluation (every eval_every steps) whose filter pass rate "
        "reaches this; `steps` is then the most a run takes. None: always `steps`"))
    eval_samples: int = Field(default=8, ge=0, description="held-out completions written to samples.jsonl")
    save_every: int = Field(default=10, gt=0, description="checkpoint interval in steps (resume only)")
    backend: Literal["auto", "transformers", "vllm"] = Field(default="auto", description="generation during "
                                                            "training; auto: vLLM where CUDA and vllm exist")
    # Memory and speed on a GPU (in no key); unset, they fit a 1.5B policy on one 80 GB GPU (synpro.grpo.trainer).
    gradient_checkpointing: bool | None = Field(default=None, description=(
        "recompute activations in the backward pass; none: on with CUDA, off on a CPU (where it only costs time)"))
    vllm_mode: Literal["colocate", "server"] | None = Field(default=None, description=(
        "colocate: vLLM shares the training GPU (none: this); server: a `trl vllm-serve` on other GPUs"))
    vllm_gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1, description=(
        "colocate: the share of the GPU vLLM may take; none: 0.3"))
    vllm_server_url: str | None = Field(default=None, description="server: the `trl vllm-serve` base URL")
    vllm_max_model_length: int | None = Field(default=None, gt=0, description=(
        "vLLM's context (prompt + completion); none: the model's own"))
    seed: int | None = Field(default=None, description="default: the data seed (a generator makes data)")

    @model_validator(mode="after")
    def _micro_divides(self) -> "GrpoSpec":
        completions = self.prompts_per_step * self.num_generations
        if self.micro_batch_size is not None and completions % self.micro_batch_size:
            raise ValueError(f"[micro_batch_size] {self.micro_batch_size} does not divide the generation batch of "
                             f"{completions} completions (prompts_per_step × num_generations)")
        if self.target_pass_rate is not None and not self.eval_every:
            raise ValueError("[target_pass_rate] needs held-out evaluations during training: set eval_every > 0")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(f"[epsilon_high] {self.epsilon_high} is below epsilon ({self.epsilon})")
        if self.vllm_mode == "server" and not self.vllm_server_url:
            raise ValueError("[vllm_server_url] vllm_mode 'server' needs the `trl vllm-serve` base URL")
        return self

    @property
    def completions_per_step(self) -> int:
        """The generation batch: every prompt's whole group, so it always divides into num_generations."""
        return self.prompts_per_step * self.num_generations


class ArmSpec(BaseModel):
    """One arm; `kind` picks the registered arm, the remaining keys are that arm's options (checked
    against the arm's own Options model by `synpro.resolve`, which may import the arm registry)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None

    @model_validator(mode="after")
    def _default_name(self) -> "ArmSpec":
        if self.name is None:
            self.name = self.kind
        return self


# ---- where and with what stages run (synpro.executors); never part of a stage key or a trial's identity ----

class ResourceSpec(_Strict):
    """What one stage asks for. Unset fields come from `resources.default`, then from these defaults:
    one process, no GPU, one node, the scheduler's own CPUs, memory and time."""

    processes: int | None = Field(default=None, ge=1, description=(
        "ranks; above 1 the stage runs under torchrun (DDP, or FSDP2 with training.parallelism: fsdp): only "
        "stages that support it (pretrain)"))
    gpus: int | None = Field(default=None, ge=0, description="GPUs in all; each rank gets gpus / processes")
    nodes: int | None = Field(default=None, ge=1, description="Slurm nodes (1 only, for now)")
    cpus: int | None = Field(default=None, ge=1, description="CPU cores per process")
    mem_gb: float | None = Field(default=None, gt=0, description="memory per node, GB")
    time_min: int | None = Field(default=None, gt=0, description="wall-clock limit of one Slurm job, minutes")

    @model_validator(mode="after")
    def _fits(self) -> "ResourceSpec":
        if self.gpus and self.processes and self.gpus % self.processes:
            raise ValueError(f"[gpus] {self.gpus} GPUs do not split evenly over {self.processes} processes")
        if self.nodes is not None and self.nodes > 1:
            raise ValueError("[nodes] multi-node stages are not supported yet: one node per stage")
        return self


RESOURCE_DEFAULTS = {"processes": 1, "gpus": 0, "nodes": 1, "cpus": None, "mem_gb": None, "time_min": None}


class ExecutorSpec(_Strict):
    """How a ready stage is launched (`synpro sweep --executor` overrides `kind`).

    local: in the sweep process (`mode: inline`) or a fresh Python process per stage (`subprocess`,
    whose GPU memory is returned when it ends); `auto` is inline without CUDA and subprocess with it.
    slurm: every stage a Slurm job through submitit, with its resources; the options below are
    passed to sbatch. Either way a stage with `processes > 1` runs its ranks under torchrun."""

    kind: Literal["local", "slurm"] = "local"
    mode: Literal["auto", "inline", "subprocess"] = "auto"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default=[], description="shell lines run before each Slurm job (module load, ...)")
    sbatch: dict[str, Any] = Field(default={}, description="more sbatch options, e.g. {exclusive: true}")
    signal_delay_s: int = Field(default=120, ge=0, description="Slurm sends SIGUSR2 this long before the "
                                "time limit: training checkpoints and the job is requeued")
    max_requeues: int = Field(default=3, ge=0, description="requeues after time-outs or pre-emptions")
    poll_seconds: float = Field(default=2.0, gt=0, description="how often the sweep looks at a job it waits for")
    parallel: int = Field(default=1, ge=1, description=(
        "stages of one trial run at once (arms side by side, each its own process or Slurm job); 1: one "
        "after another. Above 1 the local executor runs every stage in a subprocess (`auto`)"))

    @model_validator(mode="after")
    def _parallel_needs_processes(self) -> "ExecutorSpec":
        if self.parallel > 1 and self.kind == "local" and self.mode == "inline":
            raise ValueError("[parallel] stages running at once need a process each: use mode subprocess "
                             "or auto, not inline (in-process stages would share torch's global RNG)")
        return self


class TrackingSpec(_Strict):
    mlflow_uri: str | None = None  # default: sqlite inside the workdir
    enabled: bool = True


class StoreSpec(_Strict):
    url: str | None = None  # default: sqlite inside the workdir
    optuna_url: str | None = None  # default: a second sqlite file (sharing one breaks Optuna)

    @model_validator(mode="after")
    def _two_databases(self) -> "StoreSpec":
        if self.url is not None and self.url == self.optuna_url:
            raise ValueError("[optuna_url] the results store and Optuna need two databases (both keep an "
                             "alembic_version table); give store.optuna_url its own database")
        return self


class ParamSpec(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if not all(c is None or isinstance(c, (str, int, float, bool)) for c in self.choices):
                raise ValueError("categorical choices must be scalars (string, number, boolean or null)")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs `low` and `high`")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log-scaled parameter needs low > 0")
        return self


# Metrics of an arm's synthetic data rather than of its training: the mean MiniLM similarity to the
# source over the passed outputs of the sets the arm's last round trained on.
SYNTHETIC_METRICS = ("synthetic_similarity",)
# Metrics that invert the reference (oracle) curve.
EFFECTIVE_METRICS = ("effective_tokens", "multiplier_vs_repetition")


class ObjectiveSpec(_Strict):
    arm: str = "repetition"
    metric: Literal["final_val_loss", "effective_tokens", "multiplier_vs_repetition",
                    "synthetic_similarity"] = "final_val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class SearchSpec(_Strict):
    sampler: Literal["grid", "tpe", "random", "nsga2"] = "grid"
    n_trials: int | None = Field(default=None, gt=0, description="default: the grid size, or 1")
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec,
                                     description="the objective; with `objectives`, their first (the primary)")
    objectives: list[ObjectiveSpec] = Field(default=[], description=(
        "two or more: a multi-objective search whose answer is the Pareto front (every sampler supports it)"))
    params: dict[str, ParamSpec] = {}
    population_size: int | None = Field(default=None, ge=2, description=(
        "nsga2 only: trials per generation (default 50, Optuna's); the first generation is sampled at random"))
    heartbeat_seconds: int = Field(default=30, gt=0)
    stale_after_seconds: int = Field(default=120, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _primary_objective(cls, data: Any) -> Any:
        """`objective` is always the first of `objectives`, so code that reads one objective reads the primary."""
        if isinstance(data, dict) and "objective" not in data and data.get("objectives"):
            return {**data, "objective": data["objectives"][0]}
        return data

    @model_validator(mode="after")
    def _grid_is_discrete(self) -> "SearchSpec":
        if self.sampler == "grid":
            for name, p in self.params.items():
                if p.type != "categorical" and p.step is None:
                    raise ValueError(f"[params.{name}] a grid needs discrete values: give `choices` or a `step`")
        return self

    @model_validator(mode="after")
    def _population_for_nsga2(self) -> "SearchSpec":
        if self.population_size is not None and self.sampler != "nsga2":
            raise ValueError(f"[population_size] only the nsga2 sampler has generations, not {self.sampler}")
        return self

    @model_validator(mode="after")
    def _objectives(self) -> "SearchSpec":
        if len(self.objectives) == 1:
            raise ValueError("[objectives] one objective goes under `objective`; `objectives` lists two or more")
        if self.objectives and self.objective != self.objectives[0]:
            raise ValueError("[objective] with `objectives`, `objective` is their first: leave it out")
        seen = set()
        for i, o in enumerate(self.objectives):
            if (o.arm, o.metric) in seen:
                raise ValueError(f"[objectives.{i}] {o.metric} of {o.arm} is already an objective")
            seen.add((o.arm, o.metric))
        return self

    @property
    def multi(self) -> bool:
        return bool(self.objectives)

    def targets(self) -> list[tuple[str, ObjectiveSpec]]:
        """(spec key, objective) for every objective, the primary first."""
        if self.multi:
            return [(f"search.objectives.{i}", o) for i, o in enumerate(self.objectives)]
        return [("search.objective", self.objective)]

    def record(self) -> dict[str, Any]:
        """What the store keeps as the study's objective: the primary's fields, and with several every
        objective under `objectives` (a study without that key is single-objective)."""
        return {**self.objective.model_dump(), **({"objectives": [o.model_dump() for o in self.objectives]}
                                                   if self.multi else {})}


class AnalysisSpec(_Strict):
    """How stored runs are summarised: no stage reads it, so it is not part of a trial's identity."""

    bootstrap: int = Field(default=200, ge=0, description=(
        "bootstrap refits behind each fitted constant's interval (0: no intervals); --bootstrap overrides"))
    tail_checkpoints: int = Field(default=3, ge=1, description=(
        "the multiplier compares the mean D_eff over each curve's last k checkpoints (one point jitters)"))


class OracleReferenceSpec(_Strict):
    """What effective tokens invert: `trial` (each trial's own oracle, per seed), `fixed` (the oracle
    trained at `params` overrides, one for the whole study) or `best` (the study's oracle with the
    lowest final val loss, applied when the sweep ends). A bare string names the kind."""

    kind: Literal["trial", "fixed", "best"] = "trial"
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _params_for_fixed(self) -> "OracleReferenceSpec":
        if (self.kind == "fixed") != bool(self.params):
            raise ValueError("a fixed reference needs `params` (e.g. {training.lr: 3.0e-3}); trial and best take none")
        return self


REFERENCE_ARM = "reference"  # the name a fixed reference oracle is recorded under in every trial


class RefreshSpec(_Strict):
    """When a SynPro arm's pretraining ends a round and its generators are retrained (method.md §2).

    `plateau` (our choice): the validation loss improved by less than `min_improvement` (relative) over
    the last `window` evaluations, after at least `min_tokens`; `tokens`: at the fixed counts `at_tokens`,
    as the paper did by hand. At most `max_rounds` refreshes; the last round runs to the budget T.
    Whether a refresh trains its generators from the base model or the last round's is `grpo.init`."""

    schedule: Literal["plateau", "tokens"] = "plateau"
    at_tokens: list[int] = []
    window: int = Field(default=3, gt=0)
    min_improvement: float = Field(default=0.01, ge=0)
    min_tokens: int = Field(default=0, ge=0)
    max_rounds: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _schedule(self) -> "RefreshSpec":
        if self.schedule == "tokens":
            if len(self.at_tokens) < self.max_rounds:
                raise ValueError(f"[at_tokens] {self.max_rounds} refresh round(s) need as many token counts, "
                                 f"got {len(self.at_tokens)}")
            if any(b <= a for a, b in zip(self.at_tokens, self.at_tokens[1:])) or any(t <= 0 for t in self.at_tokens):
                raise ValueError("[at_tokens] refresh points must be positive and increasing")
        return self

    def stop(self, round_: int) -> dict | None:
        """How pretraining round `round_` may end early; None for the last round (it runs to T)."""
        if round_ >= self.max_rounds:
            return None
        if self.schedule == "tokens":
            return {"at_tokens": self.at_tokens[round_]}
        return {"plateau": {"window": self.window, "min_improvement": self.min_improvement,
                            "min_tokens": self.min_tokens}}


class Spec(_Strict):
    experiment: ExperimentSpec
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    budget: BudgetSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    rewards: RewardsSpec = Field(default_factory=RewardsSpec)
    probe: ProbeSpec = Field(default_factory=ProbeSpec)
    influence: InfluenceSpec = Field(default_factory=InfluenceSpec)
    grpo: GrpoSpec = Field(default_factory=GrpoSpec)
    refresh: RefreshSpec = Field(default_factory=RefreshSpec)
    arms: list[ArmSpec] = Field(default_factory=lambda: [ArmSpec(kind="repetition"), ArmSpec(kind="oracle")])
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    # Per stage kind (pools, synthesize, pretrain, probe, grpo, evaluate, ...) and `default`.
    resources: dict[str, ResourceSpec] = {}
    store: StoreSpec = Field(default_factory=StoreSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    # What D_eff inverts: each trial's own oracle (per seed), a fixed oracle shared by the study, or
    # the study's best oracle (lowest final val loss; results are recomputed at the end of a sweep).
    reference: OracleReferenceSpec = Field(default_factory=OracleReferenceSpec)
    source_file: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Spec":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"[arms] arm names must be unique, got {names}")
        unique, total = self.budget.resolve(self.model)
        if total < unique:
            raise ValueError(f"[budget.total_tokens] total tokens T={total:,} is below the unique budget U={unique:,}")
        past = [t for t in self.refresh.at_tokens if t >= total] if self.refresh.schedule == "tokens" else []
        if past:
            raise ValueError(f"[refresh.at_tokens] refresh points {past} are at or past the budget T={total:,}")
        if unique < self.training.seq_len:
            key = "unique_tokens" if self.budget.unique_tokens is not None else "unique_fraction"
            raise ValueError(f"[budget.{key}] U={unique:,} unique tokens hold no whole training sequence "
                             f"of training.seq_len={self.training.seq_len}")
        for key, objective in self.search.targets():
            if objective.arm not in names:
                raise ValueError(f"[{key}.arm] {objective.arm!r} is not an arm ({', '.join(names)})")
            if objective.metric == "multiplier_vs_repetition" and "repetition" not in {a.kind for a in self.arms}:
                raise ValueError(f"[{key}.metric] 'multiplier_vs_repetition' needs a repetition arm")
        interval = self.eval.interval_tokens
        if interval is not None and interval % self.training.eval_interval_tokens:
            raise ValueError(f"[eval.interval_tokens] {interval:,} is not a multiple of "
                             f"training.eval_interval_tokens ({self.training.eval_interval_tokens:,}): "
                             "checkpoints exist only at training evaluations")
        for path in self.search.params:
            _check_path(self.model_dump(mode="python"), path)
        if self.reference.kind != "trial" and "oracle" not in {a.kind for a in self.arms}:
            raise ValueError("[reference] a fixed or best reference is an oracle arm's curve: add an oracle arm")
        if self.reference.kind == "fixed":
            if REFERENCE_ARM in names:
                raise ValueError(f"[arms] {REFERENCE_ARM!r} names the fixed reference oracle: rename that arm")
            for path in self.reference.params:
                _check_path(self.model_dump(mode="python"), path, key="reference.params")
        return self

    # ---- views -------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self.experiment.resolved_workdir()

    def resolved_budget(self) -> ResolvedBudget:
        """U and T as every stage takes them (see ResolvedBudget)."""
        unique, total = self.budget.resolve(self.model)
        steps = max(1, math.ceil(total / self.training.tokens_per_step))
        return ResolvedBudget(unique=unique, total=steps * self.training.tokens_per_step, steps=steps,
                              trained_unique=unique // self.training.seq_len * self.training.seq_len,
                              requested_total=total)

    def store_url(self) -> str:
        return self.store.url or sqlite_url(self.workdir / "synpro.db")

    def optuna_url(self) -> str:
        return self.store.optuna_url or sqlite_url(self.workdir / "optuna.db")

    def mlflow_uri(self) -> str:
        return self.tracking.mlflow_uri or sqlite_url(self.workdir / "mlflow.db")

    def content_hash(self) -> str:
        """Identity of what a trial computes: everything but names, locations and the search block."""
        data = self.to_dict()
        for volatile in ("tracking", "store", "search", "analysis", "executor", "resources"):
            data.pop(volatile, None)
        for runtime in ("checkpoint_minutes", "activation_checkpointing", *(
                ("parallelism",) if self.training.parallelism == "ddp" else ())):
            data["training"].pop(runtime, None)
        data["experiment"] = {"seed": self.experiment.seed}
        for name in CorpusSpec.RUNTIME_FIELDS:
            data["corpus"].pop(name, None)
        seeds, data_seed = self.experiment.training_seeds(), self.experiment.resolved_data_seed()
        if seeds != [self.experiment.seed] or data_seed != self.experiment.seed:  # one seed: hash as before
            data["experiment"] |= {"seeds": seeds, "data_seed": data_seed}
        if data["reference"] == {"kind": "trial", "params": {}}:
            data.pop("reference")
        return stable_hash(data, length=12)

    def corpus_path(self) -> Path | None:
        """The corpus path, anchored at the spec file's folder when relative."""
        raw = self.corpus.path or (self.corpus.dataset if self.corpus.source == "hf" else None)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_absolute() and self.source_file:
            anchored = Path(self.source_file).parent / path
            if anchored.exists() or self.corpus.source != "hf":
                return anchored
        return path

    def arm(self, name: str) -> ArmSpec:
        return next(a for a in self.arms if a.name == name)

    def resources_for(self, kind: str) -> dict[str, Any]:
        """What a stage of `kind` asks for: its own entry over `resources.default` over RESOURCE_DEFAULTS."""
        out = dict(RESOURCE_DEFAULTS)
        for entry in (self.resources.get("default"), self.resources.get(kind)):
            if entry is not None:
                out.update({k: getattr(entry, k) for k in entry.model_fields_set if getattr(entry, k) is not None})
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_params(self, params: dict[str, Any]) -> "Spec":
        """A copy with dotted-path overrides applied (how a trial's sampled params become its spec)."""
        data = copy.deepcopy(self.to_dict())
        for path, value in params.items():
            _set_path(data, path, value)
        data["source_file"] = self.source_file
        return Spec.model_validate(data)

    def masked(self) -> "Spec":
        """A copy safe to write or show: passwords and tokens in its strings (store, Optuna and MLflow
        URLs, a generator endpoint) replaced by ***. The real spec stays in memory to connect with."""
        from synpro.core.secrets import mask

        def walk(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            return mask(value) if isinstance(value, str) else value

        data = walk(self.to_dict())
        data["source_file"] = self.source_file
        return Spec.model_validate(data)

    def flat(self) -> dict[str, Any]:
        """Dotted-path view for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{v.get('name', i)}", v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


# ---- dotted paths ------------------------------------------------------------------------------

def _split(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def _check_path(data: Any, path: str, key: str = "search.params") -> None:
    node = data
    for part in _split(path):
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(node, list) and isinstance(part, str):
            named = [a for a in node if isinstance(a, dict) and a.get("name") == part]
            if not named:
                raise ValueError(f"[{key}] {path!r} names no arm {part!r}")
            node = named[0]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and "kind" in node:  # an arm option: the arm's Options model checks it
            return
        else:
            raise ValueError(f"[{key}] {path!r} is not a spec field")


def _set_path(data: dict, path: str, value: Any) -> None:
    parts = _split(path)
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[part] if isinstance(part, int) else next(a for a in node if a.get("name", a.get("kind")) == part)
        else:
            node = node.setdefault(part, {})
    node[parts[-1]] = value


# ---- loading -----------------------------------------------------------------------------------

def line_index(text: str) -> dict[tuple, int]:
    """Key path → 1-based line, so errors can point into the file."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (key.value,)
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, ())
    return index


def _problems(err: ValidationError, lines: dict[tuple, int]) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        line = None
        msg = e["msg"].removeprefix("Value error, ")
        located = re.match(r"^\[([\w.]+)\] (.*)$", msg, re.S)  # cross-field checks name their key
        if located:
            loc = loc + tuple(_split(located.group(1)))
            msg = located.group(2)
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `synpro validate --help` lists the spec reference)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif "input" in e and e["type"] not in ("value_error", "assertion_error") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        for n in range(len(loc), -1, -1):  # nearest located ancestor
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        key = ".".join(str(p) for p in loc) or None
        problems.append(Problem(msg, key, line))
    return problems


def parse_spec(text: str, file: str | None = None) -> Spec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError.one(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=file,
                             line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError.one("the spec must be a YAML mapping with at least `experiment` and `budget`", file=file)
    data["source_file"] = file
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise InputError(_problems(err, line_index(text)), file=file) from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError.one(f"cannot read the spec: {exc.strerror}", file=str(path)) from None
    return parse_spec(text, file=str(path))
