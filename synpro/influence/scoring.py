"""Influence scoring: I(y) = L(y; θ) − L(y; θ′), the mean token cross-entropy of y under the checkpoint θ
minus that under its probed copy θ′. Positive: learning the reference task made y more likely.

How a text is scored (the same alone or in any batch):
- tokens = [BOS] + tokens(y) + [EOS], cut to `max_tokens`. BOS is the tokenizer's bos (else eos): pretraining
  documents follow the previous document's EOS, so that is the context the model learned them in, and the
  first word of y is scored too. EOS is appended as in the authors' release.
- Texts are sorted by length and cut into batches of `batch_size`, right-padded; the attention mask hides the
  padding from every real token and the label mask drops it from the loss, whose mean runs over the text's
  own predicted tokens only. (The release scores padding: its score depends on the batch.)
- Both checkpoints are loaded once per scorer; scores are cached on disk by (scorer key, text hash).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from synpro.core.devices import allow_tf32, dtype_of, pick_device  # noqa: F401  (pick_device: re-exported)
from synpro.core.hashing import stable_hash
from synpro.errors import InputError
from synpro.influence.cache import ScoreCache, text_hash
from synpro.influence.losses import sequence_losses

if TYPE_CHECKING:
    import torch

PROBE_MANIFEST = "probe.json"


def load_causal_lm(folder: Path, device: str, what: str, key: str | None = None,
                   precision: str | None = None) -> "torch.nn.Module":
    """An HF causal LM from a local folder, in eval mode, its weights in `precision` (None: fp32, with TF32
    matmuls on CUDA); a folder that holds none is an InputError."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise InputError.one(f"{what} {folder} is not a model folder (no config.json)", key=key,
                             hint="pass the HF model folder a training run saved (its final/ folder)")
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype_of(precision))
    allow_tf32(device)
    return model.to(pick_device(device)).eval()


def scorer_key(probe_dir: Path, max_tokens: int, precision: str | None = None) -> str:
    """The probe's own key (it names θ, the reference set and the settings) plus the truncation length and a
    precision other than fp32 (cached scores of one never stand in for the other's)."""
    manifest = Path(probe_dir) / PROBE_MANIFEST
    probe = json.loads(manifest.read_text())["key"] if manifest.exists() else str(Path(probe_dir).resolve())
    return stable_hash("influence", probe, max_tokens, *([precision] if precision not in (None, "fp32") else []))


class InfluenceScorer:
    """θ and θ′ loaded once; `influence(texts)` scores a list of texts in length-sorted, masked batches."""

    def __init__(self, base_dir: Path, probe_dir: Path, tokenizer_dir: Path, *, max_tokens: int = 2048,
                 batch_size: int = 16, device: str = "auto", cache_path: Path | None = None,
                 precision: str | None = None):
        from synpro.data.tokenizer import load_tokenizer

        self.device = pick_device(device)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.tokenizer = load_tokenizer(Path(tokenizer_dir))
        eos = self.tokenizer.eos_token_id
        self.bos = eos if self.tokenizer.bos_token_id is None else self.tokenizer.bos_token_id
        self.eos = eos
        self.pad = eos if self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id
        self.base = load_causal_lm(base_dir, self.device, "checkpoint θ", "--checkpoint", precision)
        self.probe = load_causal_lm(probe_dir, self.device, "probed checkpoint θ′", precision=precision)
        self.key = scorer_key(probe_dir, max_tokens, precision)
        self.cache = ScoreCache(cache_path, self.key) if cache_path else None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        from synpro.data.tokenizer import encode_batch

        return [([self.bos] + ids + [self.eos])[:self.max_tokens] for ids in encode_batch(self.tokenizer, texts)]

    def losses(self, texts: Sequence[str]) -> list[tuple[float, float]]:
        """(L(y; θ), L(y; θ′)) per text, from the cache where it has them."""
        hashes = [text_hash(t) for t in texts]
        known = self.cache.get(hashes) if self.cache else {}
        todo = sorted({h: t for h, t in zip(hashes, texts) if h not in known}.items())
        if todo:
            seqs = self.encode([t for _, t in todo])
            base, probe = self._mean_losses(self.base, seqs), self._mean_losses(self.probe, seqs)
            fresh = {h: (b, p) for (h, _), b, p in zip(todo, base, probe)}
            if self.cache:
                self.cache.put((h, b, p) for h, (b, p) in fresh.items())
            known = {**known, **fresh}
        return [known[h] for h in hashes]

    def influence(self, texts: Sequence[str]) -> list[float]:
        return [base - probe for base, probe in self.losses(texts)]

    def _mean_losses(self, model: "torch.nn.Module", seqs: list[list[int]]) -> list[float]:
        import torch

        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = [0.0] * len(seqs)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                sums, counts = sequence_losses(model, [seqs[i] for i in batch], [1] * len(batch), self.pad, self.device)
                for i, loss in zip(batch, (sums / counts.clamp(min=1)).tolist()):
                    out[i] = loss
        return out

