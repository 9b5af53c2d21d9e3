"""BERTScore F1 (Zhang et al. 2020) as the release's similarity reward computes it: every token of one text
matched to its most similar token of the other by the cosine of a hidden layer's vectors, precision and
recall the means of those matches, F1 their harmonic mean; no idf weighting, no baseline rescaling, special
tokens left out, texts truncated to the model's length. Written here (a few lines) rather than taking the
`bert-score` package, which pins its own model loading; the definition is the same.
"""

from __future__ import annotations

from functools import cache
from typing import Sequence

from synpro.errors import InputError

DEFAULT_MODEL = "microsoft/deberta-large-mnli"
DEFAULT_LAYERS = {DEFAULT_MODEL: 18}  # bert-score's tuned layer for the release's model


def f1(references: Sequence[str], candidates: Sequence[str], model: str | None = None, layer: int | None = None,
       batch_size: int = 16) -> list[float]:
    """BERTScore F1 per (reference, candidate) pair; an empty text on either side scores 0."""
    import torch

    name = model or DEFAULT_MODEL
    tokenizer, lm = _load(name)
    chosen = layer if layer is not None else DEFAULT_LAYERS.get(name, lm.config.num_hidden_layers)
    if not 0 <= chosen <= lm.config.num_hidden_layers:
        raise InputError.one(f"{name} has layers 0..{lm.config.num_hidden_layers}, not {chosen}",
                             key="rewards.similarity.layer")
    texts = list(references) + list(candidates)
    vectors = []
    limit = min(tokenizer.model_max_length, 4096)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit, return_special_tokens_mask=True)
        special = batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            hidden = lm(**batch.to(lm.device), output_hidden_states=True).hidden_states[chosen].float().cpu()
        keep = batch["attention_mask"].cpu().bool() & ~special
        for row, mask in zip(hidden, keep):
            vectors.append(torch.nn.functional.normalize(row[mask], dim=-1))
    n = len(references)
    scores = []
    for ref, cand in zip(vectors[:n], vectors[n:]):
        if not len(ref) or not len(cand):
            scores.append(0.0)
            continue
        sim = cand @ ref.T
        precision, recall = sim.max(dim=1).values.mean(), sim.max(dim=0).values.mean()
        scores.append(float(2 * precision * recall / (precision + recall)))
    return scores


@cache  # one loaded scorer per process and model
def _load(name: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModel.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError.one(f"cannot load the BERTScore model {name!r}: {exc}", key="rewards.similarity.model",
                             hint="give a local model folder or an HF id already in the cache") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tokenizer, model.to(device).eval()
