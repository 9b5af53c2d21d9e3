"""The cost model behind `synpro plan --estimate`: FLOPs, memory per GPU and device-hours of every stage.

Before a run a researcher needs to know whether a spec fits an allocation. The estimate walks the arms'
own recipes (synpro.arms) over a graph of cost nodes instead of real stages (`CostGraph`), so it needs
nothing of the machine (no model weights, corpus or datasets) and counts exactly the stages a sweep
would run: every round of a refreshing arm, once per training seed, shared stages once.

Formulas and where they come from (N_mm: the matmul parameters, non-embedding plus the output head;
L layers, d model width, S sequence length, V vocabulary):

- Training FLOPs per token: 6·N_mm + 12·L·d·S (PaLM, Chowdhery et al. 2022, App. B: the 6N of Kaplan
  et al. 2020 plus attention's QKᵀ and AV, forward and backward); a forward pass is a third of it. MFU is
  defined against this count, as in PaLM.
- Generation: prefill 2·N_mm per prompt token plus causal attention 2·L·d·P²; each decoded token at
  context c costs 2·N_mm + 4·L·d·c (the same count, attending only to what exists).
- Model state in training: 16 bytes per parameter under AdamW with fp32 master weights (ZeRO,
  Rajbhandari et al. 2020, §3.1: weights, gradients, two moments); 8 for a bf16 model with bf16 moments.
- Activations kept for the backward pass: 34·S·b·d bytes per layer in 16-bit (Korthikanti et al. 2022,
  eq. 1) without the 5·a·S²·b attention-score term, which SDPA / flash attention never stores; twice
  that in fp32; plus fp32 logits and their gradient, 8·S·b·V bytes.
- KV cache: 2·L·d_kv·2 bytes per token in bf16 (keys and values of every layer).
- Stage kinds: pools and extra tokenize text on CPU cores at an assumed rate (`Assumptions`); pretrain
  is training over its round's tokens plus every validation pass; probe is K training steps on the
  reference set plus its held-out passes; grpo is rollouts (generation) + policy forward/backward +
  reference forward (β > 0) + influence scoring under θ and θ′; synthesize is generation over the pool;
  evaluate is lm-eval's likelihood requests (items × choices per task) on every snapshot.

GPU-hours = FLOPs / (peak × MFU); the GPU count sets the wall time, not the GPU-hours (ideal scaling).
Generation runs at its own, lower efficiency (`gen_mfu`): decoding is memory-bound. LLM judges and the
MiniLM similarity are served elsewhere (endpoints) and not counted here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from synpro.core.hashing import stable_hash
from synpro.errors import InputError
from synpro.grpo.trainer import CUDA_MICRO_BATCH, VLLM_MEMORY_SHARE

if TYPE_CHECKING:
    from synpro.spec import Spec

GB = 1e9


@dataclass(frozen=True)
class Device:
    """One accelerator (or one CPU core): dense bf16 peak FLOP/s and memory, from its vendor's datasheet."""

    name: str
    peak_flops: float
    memory_gb: float | None
    source: str
    kind: str = "gpu"


DEVICES: dict[str, Device] = {d.name.lower(): d for d in [
    Device("H100", 989e12, 80, "NVIDIA H100 SXM datasheet: 989 TFLOPS bf16 dense, 80 GB HBM3"),
    Device("H100-PCIe", 756e12, 80, "NVIDIA H100 PCIe datasheet: 756 TFLOPS bf16 dense, 80 GB"),
    Device("H200", 989e12, 141, "NVIDIA H200 SXM datasheet: 989 TFLOPS bf16 dense, 141 GB HBM3e"),
    Device("B200", 2250e12, 180, "NVIDIA HGX B200 datasheet: 2.25 PFLOPS bf16 dense per GPU, 180 GB"),
    Device("A100", 312e12, 80, "NVIDIA A100 80GB SXM datasheet: 312 TFLOPS bf16 dense, 80 GB"),
    Device("A100-40GB", 312e12, 40, "NVIDIA A100 40GB datasheet: 312 TFLOPS bf16 dense, 40 GB"),
    Device("L40S", 362e12, 48, "NVIDIA L40S datasheet: 362 TFLOPS bf16 dense (733 with sparsity), 48 GB"),
    Device("L4", 121e12, 24, "NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity, so 121 dense, 24 GB"),
    Device("MI300X", 1307e12, 192, "AMD Instinct MI300X datasheet: 1,307 TFLOPS bf16 dense, 192 GB"),
    # One core: 2 FMA units x 16 fp32 lanes x 2 FLOPs x ~3 GHz (AVX-512); memory is this machine's RAM.
    Device("cpu", 192e9, None, "one AVX-512 core: 2 FMA x 16 fp32 lanes x 2 FLOPs x 3 GHz = 192 GFLOP/s", "cpu"),
]}


def device(name: str) -> Device:
    """A known device by name (case-insensitive); InputError listing them otherwise."""
    found = DEVICES.get(name.lower())
    if found is None:
        raise InputError.one(f"unknown GPU {name!r}", key="gpu",
                             hint=f"choose one of {', '.join(d.name for d in DEVICES.values())}")
    if found.kind == "cpu" and found.memory_gb is None:
        import os

        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        found = Device(found.name, found.peak_flops, round(ram, 1), found.source + f"; {ram:.0f} GB RAM here", "cpu")
    return found


@dataclass(frozen=True)
class Assumptions:
    """What the estimate cannot know from the spec; every one is printed with the table."""

    mfu: float = 0.4  # training and likelihood passes: model FLOPs utilisation
    gen_mfu: float = 0.1  # generation (rollouts, synthesis): decoding is memory-bound
    chars_per_token: float = 4.0  # English web text under a BPE tokenizer
    prompt_tokens: int = 100  # an operation's instructions around the source text
    request_tokens: int = 128  # mean context + continuation of an lm-eval multiple-choice request
    tokenize_per_core: float = 5e5  # tokens per second per CPU core (HF tokenizers, data stages)

    def check(self) -> "Assumptions":
        for name in ("mfu", "gen_mfu"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InputError.one(f"--{name.replace('_', '-')} {value}: must be in (0, 1]", key=name)
        return self


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer as the cost model sees it."""

    d_model: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    vocab: int
    n_kv_heads: int | None = None
    tied: bool = False

    @property
    def d_kv(self) -> int:
        return self.d_model // self.n_heads * (self.n_kv_heads or self.n_heads)

    def non_embedding(self) -> int:
        """Attention (q, o full width; k, v at the kv width), SwiGLU MLP, norms (as synpro.models counts them)."""
        d = self.d_model
        return self.n_layers * (2 * d * d + 2 * d * self.d_kv + 3 * d * self.ffn_hidden + 4 * d) + d

    def params(self) -> int:
        return self.non_embedding() + (1 if self.tied else 2) * self.vocab * self.d_model

    def matmul(self) -> int:
        """N_mm: every parameter a token multiplies by; the input embedding is a lookup."""
        return self.non_embedding() + self.vocab * self.d_model

    def train_flops(self, tokens: float, seq: int) -> float:
        """PaLM's count: (6·N_mm + 12·L·d·S) per token."""
        return tokens * (6 * self.matmul() + 12 * self.n_layers * self.d_model * seq)

    def forward_flops(self, tokens: float, seq: int) -> float:
        return self.train_flops(tokens, seq) / 3

    def generate_flops(self, prompt: int, completion: int) -> float:
        """One sequence: prefill of `prompt` tokens, then `completion` decoded tokens (causal attention)."""
        n, ld = self.matmul(), self.n_layers * self.d_model
        prefill = 2 * n * prompt + 2 * ld * prompt * prompt
        decode = 2 * n * completion + 4 * ld * (prompt * completion + completion * (completion - 1) / 2)
        return prefill + decode

    def kv_bytes(self, tokens: float) -> float:
        return tokens * 2 * self.n_layers * self.d_kv * 2

    def train_memory(self, micro: int, seq: int, *, fp32: bool, state_bytes: int = 16,
                     checkpointed: bool = False) -> float:
        """Bytes per GPU to train: model state, stored activations of one micro batch, logits and gradient.
        Checkpointed, each block keeps only its 16-bit input and one block at a time is recomputed in full
        (Korthikanti et al. 2022, §4: 2·S·b·d per layer plus one layer's 34·S·b·d)."""
        per_layer = 34 * seq * micro * self.d_model * (2 if fp32 else 1)
        stored = 2 * seq * micro * self.d_model * (2 if fp32 else 1)
        activations = self.n_layers * stored + per_layer if checkpointed else self.n_layers * per_layer
        return self.params() * state_bytes + activations + 8 * seq * micro * self.vocab

    def infer_memory(self, batch: int, seq: int, *, weight_bytes: int = 2, generate: bool = False) -> float:
        """Bytes per GPU to score or generate: weights, the KV cache of `batch` sequences, and fp32 logits
        (of every position when scoring, of the next token only when generating)."""
        return (self.params() * weight_bytes + self.kv_bytes(batch * seq)
                + 4 * batch * (1 if generate else seq) * self.vocab)


# Models the estimate can size without their files (HF config.json values).
KNOWN_MODELS: dict[str, Shape] = {
    "smollm2-135m-instruct": Shape(576, 30, 9, 1536, 49152, n_kv_heads=3, tied=True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Shape(576, 30, 9, 1536, 49152, n_kv_heads=3, tied=True),
    "allenai/OLMo-2-0425-1B-Instruct": Shape(2048, 16, 16, 8192, 100352),
    "allenai/OLMo-2-0425-1B": Shape(2048, 16, 16, 8192, 100352),
    "Qwen/Qwen3-1.7B": Shape(2048, 28, 16, 6144, 151936, n_kv_heads=8, tied=True),
}
KNOWN_VOCABS = {"allenai/OLMo-2-0425-1B": 100278, "allenai/OLMo-2-0425-1B-Instruct": 100278}


def _local_json(name: str, filename: str) -> dict | None:
    """A file of a local model folder or of the HF cache, never the network."""
    folder = Path(name).expanduser()
    path: Path | str | None = folder / filename if folder.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(name, filename)
        except Exception:  # noqa: BLE001 - not a repo id, no cache: unknown here
            path = None
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def model_shape(name: str, *, file: str | None = None, key: str) -> Shape:
    """A generator's shape: known, or read from its config.json in a local folder or the HF cache."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    config = _local_json(name, "config.json")
    if config is None:
        raise InputError.one(f"cannot size model {name!r} for the estimate: not a known model and no config.json "
                             "in a local folder or the Hugging Face cache", file=file, key=key,
                             hint=f"known: {', '.join(KNOWN_MODELS)}; or download the model's config first")
    return Shape(config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                 config["intermediate_size"], config["vocab_size"], config.get("num_key_value_heads"),
                 bool(config.get("tie_word_embeddings", False)))


def pretrain_shape(spec: "Spec") -> Shape:
    """The pretrained model: the spec's dims with its tokenizer's vocabulary."""
    tok = spec.tokenizer
    if tok.kind == "train":
        vocab = tok.vocab_size
    elif tok.name in KNOWN_VOCABS:
        vocab = KNOWN_VOCABS[tok.name]
    else:
        data = _local_json(tok.name, "tokenizer.json")
        if data is None:
            raise InputError.one(f"cannot size the vocabulary of tokenizer {tok.name!r} for the estimate",
                                 key="tokenizer.name", file=spec.source_file,
                                 hint="use a local tokenizer folder or download it first")
        vocab = len(data["model"]["vocab"]) + len({t["id"] for t in data.get("added_tokens", [])
                                                   if t["id"] >= len(data["model"]["vocab"])})
    m = spec.model
    return Shape(m.d_model, m.n_layers, m.n_heads, m.ffn_hidden, vocab)


# ---- lm-eval requests: items x choices of each task's evaluated split (the datasets' sizes) ----
TASK_REQUESTS = {
    "piqa": 1838 * 2, "hellaswag": 10042 * 4, "winogrande": 1267 * 2, "openbookqa": 500 * 4, "boolq": 3270 * 2,
    "sciq": 1000 * 4, "arc_easy": 2376 * 4, "arc_challenge": 1172 * 4, "commonsense_qa": 1221 * 5,
    "social_iqa": 1954 * 3,
}
TASK_CHOICES = {"piqa": 2, "hellaswag": 4, "winogrande": 2, "openbookqa": 4, "boolq": 2, "sciq": 4, "arc_easy": 4,
                "arc_challenge": 4, "commonsense_qa": 5, "social_iqa": 3}


# ---- the graph the arms' recipes build, in cost nodes --------------------------------------------

@dataclass
class Node:
    """One stage as the estimate sees it: its kind, identity (as a key would dedupe it), inputs, arms."""

    kind: str
    ident: str
    inputs: dict[str, "Node"]
    info: dict[str, Any]
    arms: list[str] = field(default_factory=list)
    label: str = ""
    spec: Any = None  # the spec it is costed under (a fixed reference's differs from the trial's)
    stopped_early: bool = True  # what a recipe reads from a round's result (`rounds.send`)

    @property
    def key(self) -> str:  # recipes dedupe stages by key
        return self.ident


class CostGraph:
    """Duck-types `synpro.stages.graph.GraphBuilder` for the arm recipes: same calls, cost nodes back."""

    def __init__(self, spec: "Spec", total: int, seed: int, nodes: dict[str, Node] | None = None, arm: str = "",
                 salt: Any = None):
        self.spec, self.total, self.seed, self.arm = spec, total, seed, arm
        self.salt = salt  # a fixed reference's params: its training stages are not the trial's
        self.data_seed = spec.experiment.resolved_data_seed()
        self.nodes: dict[str, Node] = {} if nodes is None else nodes
        self.pools = self._add("pools", {"seed": self.data_seed})

    def _add(self, kind: str, info: dict, inputs: dict[str, Node] | None = None, label: str = "") -> Node:
        inputs = inputs or {}
        ident = stable_hash(kind, info, {n: s.ident for n, s in inputs.items()})
        node = self.nodes.setdefault(ident, Node(kind, ident, inputs, info, label=label, spec=self.spec))
        if self.arm and self.arm not in node.arms:
            node.arms.append(self.arm)
        return node

    def seeded(self, seed: int, arm: str | None = None) -> "CostGraph":
        return CostGraph(self.spec, self.total, seed, self.nodes, self.arm if arm is None else arm, self.salt)

    def data_seeded(self) -> "CostGraph":
        return self.seeded(self.data_seed)

    def extra(self) -> Node:
        return self._add("extra", {}, {"pools": self.pools})

    def synthetic(self, op_name: str, generator: Node | None = None) -> Node:
        if op_name not in self.spec.generation.operations:
            raise InputError.one(f"arm {self.arm!r} names operation {op_name!r}, which generation.operations lacks",
                                 file=self.spec.source_file, key="arms",
                                 hint=f"operations: {', '.join(self.spec.generation.operations)}")
        inputs = {"pools": self.pools, **({"generator": generator} if generator else {})}
        return self._add("synthesize", {"op": op_name}, inputs, label=op_name)

    def grpo(self, op_name: str, *, probe: Node | None = None, previous: Node | None = None,
             influence: bool = True) -> Node:
        inputs = {"pools": self.pools, **({"probe": probe} if probe and influence else {}),
                  **({"previous": previous} if previous and self.spec.grpo.init == "previous" else {})}
        return self._add("grpo", {"op": op_name, "influence": bool(influence and probe)}, inputs, label=op_name)

    def pretrain(self, sources: dict[str, Node], *, label: str, parent: Node | None = None,
                 stop: dict | None = None, synthetic_share: float | None = None) -> Node:
        start = parent.info["end"] if parent is not None else 0
        end = self._round_end(stop, start)
        inputs = {"pools": self.pools, **sources, **({"parent": parent} if parent is not None else {})}
        return self._add("pretrain", {"seed": self.seed, "start": start, "end": end, "share": synthetic_share,
                                      "sources": sorted(sources), "salt": self.salt}, inputs, label=label)

    def _round_end(self, stop: dict | None, start: int) -> int:
        """Where a round ends: a fixed count, else (a plateau) an equal share of what is left per round."""
        if not stop:
            return self.total
        if "at_tokens" in stop:
            return min(stop["at_tokens"], self.total)
        rounds_left = self.spec.refresh.max_rounds + 1 - round(start * (self.spec.refresh.max_rounds + 1) / self.total)
        return start + (self.total - start) // max(1, rounds_left)

    def probe(self, pretrain: Node, *, label: str = "") -> Node:
        return self._add("probe", {}, {"pretrain": pretrain, "pools": self.pools}, label=label)

    def evaluate(self, rounds: list[Node], *, label: str) -> Node | None:
        if not self.spec.eval.tasks:
            return None
        from synpro.evaluation import BUILTIN_TASKS

        builtin = sorted(t.name for t in self.spec.eval.tasks if t.name in BUILTIN_TASKS)
        tasks = {"tasks": self._add("evaltask", {"tasks": builtin}, {"pools": self.pools})} if builtin else {}
        return self._add("evaluate", {"salt": self.salt},
                         {**{f"pretrain{i or ''}": s for i, s in enumerate(rounds)}, **tasks}, label=label)


def unroll(spec: "Spec", total: int) -> list[Node]:
    """Every stage of one trial, inputs first: each arm's recipe driven through all of its rounds (a
    refreshing arm is told every round stopped early, up to `refresh.max_rounds`), once per training seed;
    a fixed reference adds its oracle per seed, under the reference's own spec (as `plan_trial` does)."""
    from synpro.plan import make_arm
    from synpro.spec import REFERENCE_ARM, ArmSpec

    graph = CostGraph(spec, total, spec.experiment.training_seeds()[0])
    runs = [(graph, arm_spec) for arm_spec in spec.arms]
    if spec.reference.kind == "fixed":
        fixed = spec.with_params(spec.reference.params)
        runs.append((CostGraph(fixed, fixed.resolved_budget().total, graph.seed, graph.nodes,
                               salt=spec.reference.params), ArmSpec(kind="oracle", name=REFERENCE_ARM)))
    for seed in spec.experiment.training_seeds():
        for base, arm_spec in runs:
            seeded = base.seeded(seed, arm_spec.name)
            recipe = make_arm(arm_spec).rounds(seeded)
            rounds = [next(recipe)]
            try:
                while True:
                    rounds.append(recipe.send(rounds[-1]))
            except StopIteration:
                pass
            seeded.evaluate(rounds, label=arm_spec.name)
    return _inputs_first(graph.nodes.values())


def _inputs_first(nodes: Iterable[Node]) -> list[Node]:
    ordered: dict[str, Node] = {}

    def visit(node: Node) -> None:
        for upstream in node.inputs.values():
            visit(upstream)
        ordered.setdefault(node.ident, node)

    for node in nodes:
        visit(node)
    return list(ordered.values())


# ---- costs -----------------------------------------------------------------------------------------

@dataclass
class StageCost:
    """One row of the estimate."""

    kind: str
    arm: str
    label: str
    flops: float | None
    memory_gb: float | None
    gpu_hours: float
    cpu_core_hours: float
    gpus: int
    fits: bool | None
    parts: dict[str, float] = field(default_factory=dict)
    per_study: str | None = None  # a fixed reference's: its identity in the study, where trials share it

    @property
    def wall_hours(self) -> float | None:
        """With the GPUs its resources ask for, at ideal scaling."""
        return self.gpu_hours / self.gpus if self.gpus else None

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "wall_hours": self.wall_hours}


def _sum(stages: Iterable[StageCost]) -> dict[str, float]:
    stages = list(stages)
    return {"flops": sum(s.flops or 0 for s in stages), "gpu_hours": sum(s.gpu_hours for s in stages),
            "cpu_core_hours": sum(s.cpu_core_hours for s in stages)}


@dataclass
class Estimate:
    """The first trial's stages, and the sweep's total over every trial (see `estimate`)."""

    device: Device
    assumptions: Assumptions
    stages: list[StageCost]
    n_trials: int
    sweep: dict[str, float]

    def totals(self) -> dict[str, Any]:
        return {"trial": _sum(self.stages), "sweep": self.sweep, "n_trials": self.n_trials,
                "over_memory": [f"{s.kind} {s.label or s.arm}" for s in self.stages if s.fits is False]}

    def to_json(self) -> dict[str, Any]:
        return {"device": asdict(self.device), "assumptions": asdict(self.assumptions),
                "stages": [s.row() for s in self.stages], "totals": self.totals()}


class _Costs:
    """Each node's FLOPs, memory and hours under one spec, device and set of assumptions."""

    def __init__(self, spec: "Spec", total: int, dev: Device, a: Assumptions):
        self.spec, self.total, self.dev, self.a = spec, total, dev, a
        self.model = pretrain_shape(spec)
        self.unique = spec.budget.resolve(spec.model)[0]

    @cached_property
    def generator(self) -> Shape:
        """Sized only when a stage generates: a spec without synthetic arms needs no generator's shape."""
        return model_shape(self.spec.generation.generator.model, file=self.spec.source_file,
                           key="generation.generator.model")

    @cached_property
    def policy(self) -> Shape:
        base = self.spec.grpo.base_model
        return model_shape(base, file=self.spec.source_file, key="grpo.base_model") if base else self.generator

    def hours(self, flops: float, mfu: float) -> float:
        return flops / (self.dev.peak_flops * mfu) / 3600

    def cost(self, node: Node) -> StageCost:
        resources = self.spec.resources_for(node.kind)
        arm = ", ".join(node.arms)
        if node.kind in ("pools", "extra", "evaltask"):
            tokens = {"pools": self.unique + self.spec.budget.validation_tokens,
                      "extra": max(0, self.total - self.unique)}.get(node.kind, 0)
            return StageCost(node.kind, arm, node.label, None, None, 0.0,
                             tokens / self.a.tokenize_per_core / 3600, 0, None, {"tokens": tokens})
        flops, memory, parts, gen_flops = getattr(self, "_" + node.kind)(node)
        train_flops = flops - gen_flops
        hours = self.hours(train_flops, self.a.mfu) + self.hours(gen_flops, self.a.gen_mfu)
        memory_gb = memory / GB
        fits = None if self.dev.memory_gb is None else memory_gb <= self.dev.memory_gb
        gpus = resources.get("gpus") or 0
        if self.dev.kind == "cpu":
            return StageCost(node.kind, arm, node.label, flops, memory_gb, 0.0, hours, 0, fits, parts)
        return StageCost(node.kind, arm, node.label, flops, memory_gb, hours, 0.0, gpus, fits, parts)

    # Each returns (FLOPs, memory bytes per device, parts, FLOPs of which are generation).

    def _validation_passes(self, start: int, end: int) -> int:
        """The trainer's validation passes: at 0 (a fresh run), after each step that crosses a multiple of
        the interval, and after the last step (synpro.training.trainer)."""
        t = self.spec.training
        step, interval = t.tokens_per_step, t.eval_interval_tokens
        first, last = math.ceil(start / step), math.ceil(end / step)
        crossed = sum(1 for k in range(first + 1, last) if (k * step) // interval > ((k - 1) * step) // interval)
        return int(start == 0) + crossed + int(last > first)

    def _pretrain(self, node: Node):
        t, m = self.spec.training, self.model
        tokens = node.info["end"] - node.info["start"]
        val_tokens = self.spec.budget.validation_tokens // t.seq_len * t.seq_len
        passes = self._validation_passes(node.info["start"], node.info["end"])
        train = m.train_flops(tokens, t.seq_len)
        validation = m.forward_flops(val_tokens * passes, t.seq_len)
        processes = self.spec.resources_for("pretrain").get("processes") or 1
        micro = t.micro_batch_size or max(1, t.batch_size // processes)
        memory = m.train_memory(micro, t.seq_len, fp32=t.precision == "fp32")
        return train + validation, memory, {"train": train, "validation": validation, "tokens": tokens,
                                            "validation_passes": passes}, 0.0

    def _probe(self, node: Node):
        p, m = self.spec.probe, self.model
        tokens = p.steps * p.batch_size * p.max_tokens  # upper bound: every example at max_tokens
        train = m.train_flops(tokens, p.max_tokens)
        held_out = m.forward_flops(2 * p.eval_examples * p.max_tokens, p.max_tokens)  # before and after
        memory = m.train_memory(p.micro_batch_size or p.batch_size, p.max_tokens, fp32=p.precision == "fp32")
        return train + held_out, memory, {"train": train, "held_out": held_out, "tokens": tokens}, 0.0

    def _prompt_tokens(self) -> int:
        g = self.spec.generation
        source = min(g.window_tokens, g.chunk_chars / self.a.chars_per_token)
        return int(source) + self.a.prompt_tokens

    def _grpo(self, node: Node):
        g, policy = self.spec.grpo, self.policy
        prompt = self._prompt_tokens()
        completion = g.max_completion_length or self.spec.generation.generator.max_new_tokens
        seq = prompt + completion
        n = g.steps * g.completions_per_step
        evals = (g.steps // g.eval_every if g.eval_every else 0) + 2
        rollouts = (n + evals * g.heldout_prompts) * policy.generate_flops(prompt, completion)
        policy_train = g.num_iterations * n * policy.train_flops(seq, seq)
        old = n * policy.forward_flops(seq, seq) if g.num_iterations > 1 else 0.0
        reference = n * policy.forward_flops(seq, seq) if g.beta > 0 else 0.0
        scored = min(completion, self.spec.influence.max_tokens)
        influence = 2 * n * self.model.forward_flops(scored, scored) if node.info["influence"] else 0.0
        # On a GPU the GRPO stage's own CUDA defaults apply (synpro.grpo.trainer): a micro batch of
        # CUDA_MICRO_BATCH, gradient checkpointing, and rollouts in a vLLM colocated on a set share of the GPU.
        gpu = self.dev.kind != "cpu"
        fp32 = g.precision == "fp32" or not gpu
        micro = g.micro_batch_size or (math.gcd(CUDA_MICRO_BATCH, g.completions_per_step) if gpu
                                       else g.completions_per_step)
        checkpointed = gpu if g.gradient_checkpointing is None else g.gradient_checkpointing
        if g.lora is not None:
            state = policy.params() * (4 if fp32 else 2)
            activations = policy.train_memory(micro, seq, fp32=fp32, state_bytes=0, checkpointed=checkpointed)
        else:
            state = 0
            activations = policy.train_memory(micro, seq, fp32=fp32, state_bytes=16 if fp32 else 8,
                                              checkpointed=checkpointed)
        ref_weights = policy.params() * (4 if fp32 else 2) if g.beta > 0 else 0
        if gpu and (g.vllm_mode or "colocate") == "server":
            kv = 0.0  # rollouts on the server's own GPUs
        elif gpu and self.dev.memory_gb is not None:  # vLLM colocated: its weights and KV cache in its share
            kv = (g.vllm_gpu_memory_utilization or VLLM_MEMORY_SHARE) * self.dev.memory_gb * GB
        else:
            kv = policy.kv_bytes(g.completions_per_step * seq)
        influence_models = 2 * self.model.params() * 2 if node.info["influence"] else 0
        memory = state + activations + ref_weights + kv + influence_models
        parts = {"rollouts": rollouts, "policy": policy_train + old, "reference": reference, "influence": influence,
                 "completions": n, "prompt_tokens": prompt, "completion_tokens": completion}
        return rollouts + policy_train + old + reference + influence, memory, parts, rollouts

    def _synthesize(self, node: Node):
        gen, g = self.spec.generation, self.generator
        windows = self.unique // gen.window_tokens
        if gen.max_windows:
            windows = min(windows, gen.max_windows)
        chars = gen.window_tokens * self.a.chars_per_token
        chunks = max(1, math.ceil(chars / gen.chunk_chars))
        source = int(gen.window_tokens / chunks)
        completion = min(gen.generator.max_new_tokens, source)  # rewritten at about its own length
        prompt = source + self.a.prompt_tokens
        flops = windows * chunks * g.generate_flops(prompt, completion)
        memory = g.infer_memory(gen.generator.batch_size, prompt + completion, generate=True)
        return flops, memory, {"windows": windows, "sequences": windows * chunks, "prompt_tokens": prompt,
                               "completion_tokens": completion}, flops

    def _evaluate(self, node: Node):
        e, m = self.spec.eval, self.model
        interval = e.interval_tokens or self.spec.training.eval_interval_tokens
        snapshots = max(1, self.total // interval)
        requests, tokens = 0, 0.0
        for task in e.tasks:
            if task.name in TASK_REQUESTS:
                n = TASK_REQUESTS[task.name]
                if e.limit:
                    n = min(n, e.limit * TASK_CHOICES[task.name])
                length = self.a.request_tokens
            else:  # the builtin cloze task: items x choices of context + continuation
                b = e.builtin
                n = (min(b.items, e.limit) if e.limit else b.items) * b.choices
                length = math.ceil((b.context_chars + b.continuation_chars) / self.a.chars_per_token)
            requests += n
            tokens += n * length
        per_snapshot = m.forward_flops(tokens, self.a.request_tokens)
        memory = m.infer_memory(e.batch_size, self.a.request_tokens)
        return snapshots * per_snapshot, memory, {"snapshots": snapshots, "requests_per_snapshot": requests}, 0.0


def trial_costs(spec: "Spec", dev: Device, assumptions: Assumptions) -> list[StageCost]:
    """Every stage of one trial of `spec`, costed under the spec it runs with."""
    from synpro.spec import REFERENCE_ARM

    costs: dict[int, _Costs] = {}
    rows = []
    for node in unroll(spec, spec.resolved_budget().total):
        model = costs.setdefault(id(node.spec), _Costs(node.spec, node.spec.resolved_budget().total, dev, assumptions))
        row = model.cost(node)
        if node.arms == [REFERENCE_ARM]:
            row.per_study = stable_hash(node.ident, node.spec.content_hash())
        rows.append(row)
    return rows


def estimate(spec: "Spec", dev: Device, assumptions: Assumptions = Assumptions(),
             trials: list["Spec"] | None = None) -> Estimate:
    """The stages of `spec`'s trial on `dev`, and the sweep total over `trials` (each trial's spec: every
    grid point has its own costs; default: `spec` alone), a fixed reference's stages once per distinct
    reference (trials whose reference spec is the same share it)."""
    assumptions.check()
    stages = trial_costs(spec, dev, assumptions)
    every = [stages] + [trial_costs(t, dev, assumptions) for t in (trials or [spec])[1:]]
    shared = {s.per_study: s for rows in every for s in rows if s.per_study}  # a study trains each once
    sweep = _sum([s for rows in every for s in rows if not s.per_study] + list(shared.values()))
    return Estimate(dev, assumptions, stages, len(every), sweep)


def default_device(spec: "Spec") -> str:
    """H100, or one CPU core for a spec that asks for no GPU and trains a model under 50M parameters."""
    wants_gpu = any((r.gpus or 0) > 0 for r in spec.resources.values()) or spec.training.device.startswith("cuda")
    return "H100" if wants_gpu or spec.model.non_embedding_params() >= 50_000_000 else "cpu"

