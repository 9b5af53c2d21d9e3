"""OLMo-2-style model shapes: named presets, parameter counts and the HF config they map to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:  # transformers is heavy; only the builder needs it
    from transformers import Olmo2Config

# d_model, n_layers, n_heads, ffn_hidden. 400M and 1.1B are the paper release's shapes (method.md §6):
# 16 layers and 16 heads at d_model 1024 / 2048, i.e. OLMo-2's 370M and 1B. Their SwiGLU width is
# OLMo-2's: 1.5 x 8/3 x d_model rounded up to a multiple of 256 = 4 x d_model. Non-embedding
# parameters: 268.5M (400M) and 1.07B (1.1B); with the OLMo-2 tokenizer (100,278 tokens) the untied
# input and output embeddings add 2 x 102.7M and 2 x 205.4M. The preset names are the paper's.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, ffn_hidden=256),
    "micro": dict(d_model=128, n_layers=4, n_heads=4, ffn_hidden=512),
    "400M": dict(d_model=1024, n_layers=16, n_heads=16, ffn_hidden=4096),
    "1.1B": dict(d_model=2048, n_layers=16, n_heads=16, ffn_hidden=8192),
}


@dataclass(frozen=True)
class Vocab:
    """What a model needs to know about its tokenizer."""

    size: int
    bos_id: int
    eos_id: int
    pad_id: int


class ModelSpec(BaseModel):
    """A preset name, or explicit dims; explicit dims override the preset's."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = "tiny"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    ffn_hidden: int | None = None
    rope_theta: float = 500_000.0
    init_std: float = 0.02

    @model_validator(mode="after")
    def _resolve(self) -> "ModelSpec":
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)} "
                             "or give d_model, n_layers, n_heads, ffn_hidden")
        base = PRESETS.get(self.preset or "", {})
        for dim in ("d_model", "n_layers", "n_heads", "ffn_hidden"):
            if getattr(self, dim) is None:
                if dim not in base:
                    raise ValueError(f"{dim} is required when no preset is given")
                setattr(self, dim, base[dim])
            if getattr(self, dim) <= 0:
                raise ValueError(f"{dim} must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self

    def non_embedding_params(self) -> int:
        """N as used by Chinchilla-style budgets: attention + MLP + norms, no embeddings."""
        d, f = self.d_model, self.ffn_hidden
        per_layer = 4 * d * d + 3 * d * f + 4 * d  # q,k,v,o; gate,up,down; 2 RMSNorms + q/k norms
        return self.n_layers * per_layer + d

    def total_params(self, vocab_size: int) -> int:
        return self.non_embedding_params() + 2 * vocab_size * self.d_model

    def hf_config(self, vocab: Vocab, max_seq_len: int) -> "Olmo2Config":
        from transformers import Olmo2Config

        return Olmo2Config(
            vocab_size=vocab.size,
            hidden_size=self.d_model,
            intermediate_size=self.ffn_hidden,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads,
            max_position_embeddings=max_seq_len,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            initializer_range=self.init_std,
            bos_token_id=vocab.bos_id,
            eos_token_id=vocab.eos_id,
            pad_token_id=vocab.pad_id,
            tie_word_embeddings=False,
        )
