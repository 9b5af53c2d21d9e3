"""CPU generation with SynPro's own decode loop: bf16 weights, a slot KV cache and continuous batching.

The HF model's own modules (embeddings, norms, projections, MLPs, rotary embedding, LM head) do the
maths; only attention and the KV cache are SynPro's, so that a batch stays full: `slots` rows decode
together, each with its own length and position, and as soon as one ends (a stop id or
max_new_tokens) its slot is refilled with the next waiting prompt, prefilled on its own. Nothing
waits for the longest row of a batch; only the end of a call drains the batch. The prefix every prompt
of a call shares (chat turn, instruction) is computed once and copied into each slot it fills.

Sampling is the transformers backend's: temperature, then top-p over the full vocabulary (the
smallest set of most likely tokens whose mass reaches top_p, renormalised), greedy at temperature 0.
Top-p is exact without sorting the vocabulary (`top_p_filter`): the nucleus is looked for among the
top `TOP_K_LADDER[0]` tokens, rows whose nucleus is wider among the next rung's, and only rows wider
than the last rung fall back to a full sort.

Seeding: each prompt draws its sampling noise from a `torch.Generator` of its own, seeded from
(seed, prompt index in the call), so a prompt's output depends on neither the batch it shares nor
the slot count (up to the float rounding of batched matmuls).

Numerics: on CPUs with AVX-512 BF16 (or AMX) the weights and KV cache are bf16 (`dtype_for_cpu`),
which moves the model's probabilities slightly from fp32's, as vLLM's bf16 does on a GPU; sets made
this way are keyed apart (`set_identity`). fp32 is available (`dtype="float32"`) and then matches
the transformers backend's greedy outputs.

Architectures: the Llama family as transformers implements it (Llama, Mistral without a sliding
window, Qwen2, Qwen3); others are refused with a hint to use the transformers backend.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from synpro.errors import InputError
from synpro.generation.backends.base import Completion, Sampling, completion, continuation, stop_ids
from synpro.generation.operations.base import Messages

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from synpro.spec import Spec

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
# Rows decoded together and prompts handed over per call, per spec batch_size (sized for the transformers
# backend): 128 rows and 256 prompts a call at the default 8. Wider rows make the weight matmuls (the LM
# head's above all) more efficient and spread each layer's fixed cost; the attention over the cache grows
# with them, and so does its memory (~1.3 GB of bf16 cache for SmolLM2-135M at 450 positions). More prompts a
# call drain the batch less often (a call ends with its last rows decoding alone) but a crash loses more.
# 64 rows measured 10-18% less decode time a token than 32, 128 about 15% less than 64.
SLOTS_PER_BATCH = 16
PROMPTS_PER_SLOT = 2
PREFILL_TOKENS = 2048  # prompt tokens prefilled in one forward at most (bounds activation memory)
# A call's prompts share the chat template's system turn and the operation's instruction (29 of SmolLM2's ~212
# rephrase prompt tokens): computed once and copied into each slot when at least this long.
MIN_SHARED = 8
# top-p looks for the nucleus among the top 128 tokens, then the top 2048, before sorting the whole vocabulary
TOP_K_LADDER = (128, 2048)


# int8 (dynamic, per call) moves SmolLM2-135M's next-token distribution ~1 nat/token from fp32's (bf16: 0.001)
# and all but removes its stop token, so its answers run to the length limit: measured, not a default.
PRECISIONS = ("bf16", "int8", "fp32")


@functools.cache
def native_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 would be emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_for_cpu() -> str:
    """The precision `load` takes by default: bf16 where the CPU multiplies it natively, else fp32."""
    return "bf16" if native_bf16() else "fp32"


def implements(spec: "Spec") -> bool:
    """Whether this decoder implements the spec's generator (True where its config cannot be read: loading
    it reports that)."""
    from synpro.generation.generator import model_config

    try:
        config = model_config(spec)
    except (InputError, OSError, ValueError):
        return True
    return _implemented(config)


def _implemented(config: dict) -> bool:
    """A supported architecture attending to every earlier token (Qwen's configs name a window they do not use)."""
    qwen = config.get("model_type", "").startswith("qwen")
    windowed = config.get("use_sliding_window") if qwen else config.get("sliding_window")
    return config.get("model_type") in SUPPORTED and not windowed


def _quantize_linears(model: "PreTrainedModel") -> None:
    """Every Linear (LM head included) to int8 weights per output channel, activations quantized per call."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untie from the embeddings
    quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def _largest(probs: torch.Tensor, top_p: float, ladder: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's most likely tokens, most likely first (values, ids) [rows, width], at least up to the
    end of its nucleus, zero-padded (id 0) past what a row was given: the first rung's top k for every
    row, the next rung's for rows whose top k hold less than top_p, a full sort past the last rung."""
    vocab = probs.shape[-1]
    k = min(ladder[0], vocab) if ladder else vocab
    values, ids = torch.topk(probs, k, dim=-1) if k < vocab else torch.sort(probs, dim=-1, descending=True)
    wide = values.sum(-1) < top_p
    if k >= vocab or not bool(wide.any()):
        return values, ids
    rows = wide.nonzero().squeeze(1)
    more_values, more_ids = _largest(probs[rows], top_p, ladder[1:])
    # the wide rows' nuclei end past k: cut them to their own nucleus before widening the others to fit
    n = int(((more_values.cumsum(-1) - more_values) < top_p).sum(-1).max())
    more_values, more_ids = more_values[:, :n], more_ids[:, :n]
    if n > k:
        values = torch.nn.functional.pad(values, (0, n - k))
        ids = torch.nn.functional.pad(ids, (0, n - k))
    width = values.shape[1]
    values[rows] = torch.nn.functional.pad(more_values, (0, width - n))
    ids[rows] = torch.nn.functional.pad(more_ids, (0, width - n))
    return values, ids


def top_p_filter(probs: torch.Tensor, top_p: float,
                 ladder: Sequence[int] = TOP_K_LADDER) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row of `probs` [rows, vocab]: (token ids, their probabilities) [rows, n],
    most likely first, zero-padded past each row's nucleus (probabilities not renormalised).

    The nucleus is the shortest most-likely-first prefix whose mass reaches top_p: a token is kept when
    the mass of the tokens before it is below top_p (as transformers' TopPLogitsWarper keeps it). When
    the top k tokens hold at least top_p, the nucleus ends inside them, so `topk` gives it exactly; rows
    whose nucleus is wider climb the `ladder` of larger k (each rung only for the rows still wider), and
    rows wider than its last rung are sorted in full. Every path gives the full sort's nucleus.
    """
    values, ids = _largest(probs, top_p, tuple(ladder))
    kept = (values.cumsum(-1) - values) < top_p
    n = int(kept.sum(-1).max())
    return ids[:, :n], (values * kept)[:, :n]


def sample_rows(logits: torch.Tensor, sampling: Sampling, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of logits [rows, vocab] (fp32), with the rows' uniform draws [rows] in [0, 1):
    greedy at temperature 0, else temperature then top-p (all tokens at top_p >= 1), by inverse CDF."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ids, kept = top_p_filter(probs, sampling.top_p, TOP_K_LADDER)
    else:
        ids, kept = None, probs
    cdf = kept.cumsum(-1)
    target = (uniforms * cdf[:, -1]).unsqueeze(1)
    # the first token whose cumulative mass exceeds the draw; the count of kept tokens caps it
    pick = torch.minimum((cdf <= target).sum(-1), (kept > 0).sum(-1) - 1).clamp(min=0)
    return pick if ids is None else ids.gather(1, pick.unsqueeze(1)).squeeze(1)


class Fused:
    """One layer's query, key and value projections as one weight (and bias), gate and up as another, so
    a forward makes two matmuls where it made five (one wide matmul beats several narrow ones on a CPU).
    The modules' own weights become views of these, so the model is unchanged and holds no second copy."""

    def __init__(self, layer):
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        self.qkv_split = [p.weight.shape[0] for p in projections]
        self.qkv = torch.cat([p.weight.detach() for p in projections])
        biases = [p.bias for p in projections]
        self.qkv_bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach() if b is not None else torch.zeros(p.weight.shape[0], dtype=p.weight.dtype)
             for b, p in zip(biases, projections)])
        self.gate_up = torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()])
        for p, w in zip(projections, self.qkv.split(self.qkv_split)):
            p.weight = torch.nn.Parameter(w, requires_grad=False)
        if self.qkv_bias is not None:
            for p, b in zip(projections, self.qkv_bias.split(self.qkv_split)):
                if p.bias is not None:
                    p.bias = torch.nn.Parameter(b, requires_grad=False)
        for p, w in zip((mlp.gate_proj, mlp.up_proj), self.gate_up.chunk(2)):
            p.weight = torch.nn.Parameter(w, requires_grad=False)

    @staticmethod
    def applies(layer) -> bool:
        """Plain Linear projections and a gated MLP (not int8's quantized modules)."""
        attn, mlp = layer.self_attn, layer.mlp
        modules = (attn.q_proj, attn.k_proj, attn.v_proj, getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None))
        return all(type(m) is torch.nn.Linear for m in modules) and hasattr(mlp, "act_fn")


def shared_prefix(encoded: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares (the chat template's system turn and the operation's
    instruction), leaving each prompt at least one token of its own to prefill."""
    first, n = encoded[0], min(len(e) for e in encoded) - 1
    for other in encoded[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    return max(n, 0)


def row_generator(seed: int, index: int) -> torch.Generator:
    """Prompt `index`'s own random stream for a call seeded with `seed`."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index) % 2**63)


class _Decoder:
    """The model's forward over a KV cache of `slots` rows of up to `capacity` tokens."""

    def __init__(self, model: "PreTrainedModel", slots: int, capacity: int, cache_dtype: torch.dtype,
                 fused: "list[Fused] | None" = None):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rope = apply_rotary_pos_emb
        inner = model.model
        self.embed, self.layers, self.norm, self.rotary = inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb
        self.lm_head = model.lm_head
        self.fused = fused
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = getattr(self.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        # Keys as values, [tokens, dim] a row and head: q @ kᵀ over that layout measured ~2x faster in bf16
        # than over keys stored transposed.
        shape = (len(self.layers), slots, self.kv_heads, capacity, self.head_dim)
        self.k = torch.zeros(shape, dtype=cache_dtype)
        self.v = torch.zeros(shape, dtype=cache_dtype)
        self.prefix: tuple[torch.Tensor, torch.Tensor]  # set by `share`

    def _rotary(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary embedding's (cos, sin) at `positions`, computed once per forward for every layer."""
        return self.rotary(x, positions)

    def _project(self, n: int, attn, x: torch.Tensor,
                 rotary: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        rows, length, _ = x.shape
        if self.fused:
            fused = self.fused[n]
            q, k, v = torch.nn.functional.linear(x, fused.qkv, fused.qkv_bias).split(fused.qkv_split, -1)
        else:
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q = q.view(rows, length, self.heads, self.head_dim)
        k = k.view(rows, length, self.kv_heads, self.head_dim)
        v = v.view(rows, length, self.kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = self.rope(q, k, *rotary)
        return q, k, v

    def _layer(self, n: int, layer, x: torch.Tensor, attend) -> torch.Tensor:
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        out = attend(attn, h)
        rows, length = x.shape[:2]
        x = x + attn.o_proj(out.transpose(1, 2).reshape(rows, length, self.heads * self.head_dim))
        h = layer.post_attention_layernorm(x)
        if not self.fused:
            return x + layer.mlp(h)
        mlp = layer.mlp
        gate, up = torch.nn.functional.linear(h, self.fused[n].gate_up).chunk(2, -1)
        return x + mlp.down_proj(mlp.act_fn(gate) * up)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Softmax attention of q [rows, heads, length, dim] over k and v [rows, kv_heads, keys, dim], each
        key-value head serving its group of query heads: scores in the cache's dtype plus `bias` (0 or
        -inf, in that dtype, broadcast over [rows, kv_heads, group * length, keys]), softmax in fp32. The
        scale multiplies q (exact for a power of two, as 1/sqrt(64) is), so the wide scores take one
        in-place add and the softmax's own cast. Plain matmuls: CPU SDPA is several times slower for
        bf16 single-token queries over a masked cache."""
        rows, _, length, dim = q.shape
        grouped = (q * self.scale).reshape(rows, self.kv_heads, self.heads // self.kv_heads * length, dim).to(k.dtype)
        scores = torch.matmul(grouped, k.transpose(-1, -2))
        scores += bias
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        return torch.matmul(weights, v).view(rows, self.heads, length, dim).to(q.dtype)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden)).float()

    def prefill(self, slots: list[int], prompts: list[list[int]], start: int = 0) -> torch.Tensor:
        """Write the prompts' keys and values into `slots` from position `start` (the slots' first `start`
        positions already hold a shared prefix: `share`); logits [n, vocab] of their last tokens. Prompts
        are right-padded, so a causal mask alone keeps padding out of real rows."""
        longest = max(len(p) for p in prompts)
        pad = prompts[0][0]
        ids = torch.tensor([p + [pad] * (longest - len(p)) for p in prompts])
        positions = torch.arange(start, start + longest).unsqueeze(0).expand(len(prompts), -1)
        index = torch.tensor(slots)
        causal = torch.full((longest, start + longest), float("-inf"), dtype=self.k.dtype).triu(start + 1).repeat(
            self.heads // self.kv_heads, 1)
        x = self.embed(ids)
        rotary = self._rotary(x, positions)
        for n, layer in enumerate(self.layers):
            def attend(attn, h, n=n):
                q, k, v = self._project(n, attn, h, rotary)
                k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # attend to the keys as the cache holds them
                self.k[n, index, :, start:start + longest] = k
                self.v[n, index, :, start:start + longest] = v
                if start:
                    k, v = self.k[n, index, :, :start + longest], self.v[n, index, :, :start + longest]
                return self._attend(q, k, v, causal)
            x = self._layer(n, layer, x, attend)
        last = x[torch.arange(len(prompts)), torch.tensor([len(p) - 1 for p in prompts])]
        return self._logits(last)

    def share(self, prefix: list[int]) -> None:
        """Compute the keys and values of a prefix every prompt of the call starts with, once; `place`
        copies them into a slot instead of each prompt's prefill computing them again."""
        self.prefill([0], [prefix])
        self.prefix = (self.k[:, 0, :, :len(prefix)].clone(), self.v[:, 0, :, :len(prefix)].clone())

    def place(self, slots: list[int]) -> None:
        """Copy the shared prefix (`share`) into `slots`."""
        k, v = self.prefix
        index = torch.tensor(slots)
        self.k[:, index, :, :k.shape[2]] = k.unsqueeze(1)
        self.v[:, index, :, :v.shape[2]] = v.unsqueeze(1)

    def step(self, tokens: torch.Tensor, lengths: torch.Tensor, rows: int) -> torch.Tensor:
        """Decode one token for the first `rows` slots: tokens [rows] at positions `lengths` [rows] (each
        slot's filled length); logits [rows, vocab]. Keys past a slot's length are masked out. (Attending
        only to the filled part of the cache measured slower: a sliced cache is copied before the matmul.)"""
        visible = torch.arange(self.v.shape[3]).unsqueeze(0) <= lengths.unsqueeze(1)
        mask = torch.zeros(visible.shape, dtype=self.k.dtype).masked_fill(~visible, float("-inf")).view(rows, 1, 1, -1)
        positions = lengths.view(rows, 1)
        index = torch.arange(rows)
        x = self.embed(tokens.view(rows, 1))
        rotary = self._rotary(x, positions)
        for n, layer in enumerate(self.layers):
            def attend(attn, h, n=n):
                q, k, v = self._project(n, attn, h, rotary)
                self.k[n, index, :, lengths] = k[:, :, 0].to(self.k.dtype)
                self.v[n, index, :, lengths] = v[:, :, 0].to(self.v.dtype)
                return self._attend(q, self.k[n, :rows], self.v[n, :rows], mask)
            x = self._layer(n, layer, x, attend)
        return self._logits(x[:, 0])

    def move(self, source: int, target: int, length: int) -> None:
        """Copy slot `source`'s first `length` cached tokens into slot `target` (compacting a draining batch)."""
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]


class ContinuousBackend:
    name = "continuous"

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", stops: set[int],
                 batch_size: int, precision: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = stops
        self.slots = batch_size * SLOTS_PER_BATCH  # rows decoded together
        self.batch_size = self.slots * PROMPTS_PER_SLOT  # prompts per call: a crash loses at most these
        self.precision = precision
        self.cache_dtype = torch.float32 if precision == "fp32" or not native_bf16() else torch.bfloat16
        layers = model.model.layers
        self.fused = [Fused(layer) for layer in layers] if all(Fused.applies(layer) for layer in layers) else None

    @classmethod
    def load(cls, folder: Path, batch_size: int, spec: "Spec | None" = None, *,
             precision: str | None = None) -> "ContinuousBackend":
        """From an HF folder, in `precision` (one of PRECISIONS; default `precision_for_cpu()`); InputError
        naming the spec key if it cannot load or its architecture is not one this decoder implements."""
        precision = precision or precision_for_cpu()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        where = {"file": spec.source_file if spec else None, "key": "generation.generator.model"}
        try:
            config = AutoConfig.from_pretrained(str(folder))
            if not _implemented(config.to_dict()):
                raise InputError.one(f"the continuous backend does not implement the {config.model_type} "
                                     f"architecture of {folder}", **where,
                                     hint=f"use a {'/'.join(SUPPORTED)} model, or backend: transformers")
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
            stops = stop_ids(folder, tokenizer)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError.one(f"cannot load generator from {folder}: {exc}", **where,
                                 hint="give an HF causal-LM folder (config.json, weights and tokenizer)") from None
        if tokenizer.chat_template is None:
            raise InputError.one(f"the generator at {folder} has no chat template; use an instruct model", **where)
        if precision == "int8":
            _quantize_linears(model)
        return cls(model, tokenizer, stops, batch_size, precision)

    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[Completion]:
        """Longest prompts first into `slots` rows; a row that ends hands its slot to the next prompt."""
        encoded = [self.tokenizer.apply_chat_template(p, tokenize=True, return_dict=False, **continuation(p))
                   for p in prompts]
        with torch.inference_mode():
            return [completion(self.tokenizer, self.stop_ids, ids) for ids in self._decode(encoded, sampling)]

    def _decode(self, encoded: list[list[int]], sampling: Sampling) -> list[list[int]]:
        if not encoded:
            return []
        budget = sampling.max_new_tokens
        queue = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # pop() takes the longest
        slots = min(self.slots, len(encoded))
        decoder = _Decoder(self.model, slots, max(len(e) for e in encoded) + budget, self.cache_dtype,
                           self.fused)
        shared = shared_prefix(encoded)
        if shared >= MIN_SHARED:
            decoder.share(encoded[0][:shared])
        else:
            shared = 0
        outputs: list[list[int]] = [[] for _ in encoded]
        owner = [-1] * slots  # prompt index per slot; -1: free
        lengths = torch.zeros(slots, dtype=torch.long)  # tokens in each slot's cache
        uniforms = torch.zeros(slots, max(budget, 1))  # each slot's prompt's draws, one per new token
        tokens = torch.zeros(slots, dtype=torch.long)  # each slot's latest token, not yet in its cache
        active = 0  # slots [0, active) are decoded

        def record(rows: Sequence[int]) -> None:
            """Append the rows' latest tokens; free the slots whose prompt ended."""
            for s, t in zip(rows, tokens[list(rows)].tolist()):
                outputs[owner[s]].append(t)
                if t in self.stop_ids or len(outputs[owner[s]]) >= budget:
                    owner[s] = -1

        def admit(free: list[int]) -> None:
            """Prefill waiting prompts into free slots, PREFILL_TOKENS at a time, and sample their first tokens."""
            nonlocal active
            while free and queue:
                taken, size = [], 0
                while free and queue and (not taken or size + len(encoded[queue[-1]]) - shared <= PREFILL_TOKENS):
                    s, i = free.pop(0), queue.pop()
                    taken.append(s)
                    size += len(encoded[i]) - shared
                    owner[s], lengths[s] = i, len(encoded[i])
                    uniforms[s] = torch.rand(uniforms.shape[1], generator=row_generator(sampling.seed, i))
                if shared:
                    decoder.place(taken)
                logits = decoder.prefill(taken, [encoded[owner[s]][shared:] for s in taken], shared)
                tokens[taken] = sample_rows(logits, sampling, uniforms[taken, 0])
                active = max(active, max(taken) + 1)
                record(taken)

        while True:
            while queue and (free := [s for s in range(slots) if owner[s] < 0]):
                admit(free)
            if not queue:  # draining: the last live slot fills each hole, so steps shrink with the batch
                for s in range(slots):
                    while active > 0 and owner[active - 1] < 0:
                        active -= 1
                    if s >= active:
                        break
                    if owner[s] < 0:
                        last = active - 1
                        decoder.move(last, s, int(lengths[last]))
                        owner[s], owner[last] = owner[last], -1
                        lengths[s], tokens[s], uniforms[s] = lengths[last], tokens[last], uniforms[last]
            if not active:
                return outputs
            n = active  # every slot below it is live here
            logits = decoder.step(tokens[:n], lengths[:n], n)
            lengths[:n] += 1
            drawn = uniforms[torch.arange(n), torch.tensor([len(outputs[owner[s]]) for s in range(n)])]
            tokens[:n] = sample_rows(logits, sampling, drawn)
            record(range(n))

    def close(self) -> None:
        """Nothing to release: the model goes with the object."""
