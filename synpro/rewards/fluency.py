"""The offline quality scorer: P(clean) from a logistic regression on cheap fluency features, on DataMan's
1–5 scale (1 + 4·P). No packaged text-quality rater exists; this one is trained in about a second on
paragraphs of CPython's reference manual (clean) against degraded copies of them: words shuffled within
each sentence's span, lines repeated, text cut mid-sentence. MiniLM embeddings barely see word order and
cost ~0.1 s a paragraph on CPU, so the features are:

- familiar bigrams: the share of the text's word bigrams seen in the clean training paragraphs, among those
  whose two words are both known (shuffling breaks the bigrams, not the words);
- repetition: the shared 4-gram repetition measure of the generation filters, and the share of repeated lines;
- a clean ending: the last character closes a sentence, a code line or a bracket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Sequence

import numpy as np

from synpro.generation.text import repetition

VERSION = 1
_WORD = re.compile(r"[A-Za-z_]+|\d+")
ENDINGS = set(".!?:;)]}\"'`>")
DEGRADATIONS = ("shuffled", "repeated", "truncated")


@dataclass(frozen=True)
class Fluency:
    bigrams: frozenset[tuple[str, str]]
    words: frozenset[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def features(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            words = [w.lower() for w in _WORD.findall(text)]
            pairs = [p for p in zip(words, words[1:]) if p[0] in self.words and p[1] in self.words]
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            rows.append([sum(p in self.bigrams for p in pairs) / len(pairs) if pairs else 0.0,
                         repetition(text),
                         1 - len(set(lines)) / len(lines) if lines else 0.0,
                         float(text.rstrip()[-1:] in ENDINGS)])
        return np.asarray(rows, dtype=np.float64)

    def probability(self, texts: Sequence[str]) -> np.ndarray:
        z = ((self.features(texts) - self.mean) / self.scale) @ self.weights + self.bias
        return 1 / (1 + np.exp(-z))

    def score(self, texts: Sequence[str]) -> list[float]:
        """1 + 4·P(clean); an empty text gets the bottom of the scale."""
        p = self.probability(texts) if texts else np.zeros(0)
        return [1.0 if not t.strip() else float(1 + 4 * q) for t, q in zip(texts, p)]


def degrade(text: str, kind: str, rng: np.random.Generator) -> str:
    if kind == "shuffled":
        words = text.split()
        return " ".join(words[i] for i in rng.permutation(len(words)))
    if kind == "repeated":
        lines = text.splitlines() or [text]
        i = int(rng.integers(len(lines)))
        return "\n".join(lines[:i + 1] + [lines[i]] * int(rng.integers(2, 5)) + lines[i + 1:])
    if kind == "truncated":
        cut = int(len(text) * rng.uniform(0.3, 0.8))
        return text[:cut].rsplit(" ", 1)[0]
    raise ValueError(f"unknown degradation {kind!r}")


def fit(clean: Sequence[str], seed: int = 0, l2: float = 1e-2) -> Fluency:
    """Bigram statistics from half the clean paragraphs; the classifier on the other half and its degraded copies
    (so a clean text's bigram share is measured as on unseen text)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clean))
    stats, train = [clean[i] for i in order[: len(clean) // 2]], [clean[i] for i in order[len(clean) // 2:]]
    tokens = [[w.lower() for w in _WORD.findall(t)] for t in stats]
    model = Fluency(frozenset(p for ws in tokens for p in zip(ws, ws[1:])), frozenset(w for ws in tokens for w in ws),
                    np.zeros(4), np.ones(4), np.zeros(4), 0.0)
    texts = list(train) + [degrade(t, DEGRADATIONS[i % 3], rng) for i, t in enumerate(train)]
    labels = np.r_[np.ones(len(train)), np.zeros(len(train))]
    x = model.features(texts)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / scale

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w[:-1] + w[-1]
        p = 1 / (1 + np.exp(-z))
        value = np.mean(np.logaddexp(0, z) - labels * z) + l2 * w[:-1] @ w[:-1]
        grad = np.r_[x.T @ (p - labels) / len(labels) + 2 * l2 * w[:-1], np.mean(p - labels)]
        return value, grad

    w = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return Fluency(model.bigrams, model.words, mean, scale, w[:-1], float(w[-1]))


def manual_paragraphs() -> list[str]:
    """Prose paragraphs of CPython's reference manual (`pydoc_data.topics`), 200-1500 characters, in order."""
    from pydoc_data.topics import topics

    paragraphs = [p.strip() for name in sorted(topics) for p in topics[name].split("\n\n")]
    return [p for p in paragraphs if 200 <= len(p) <= 1500 and sum(c.isalpha() or c.isspace() for c in p) > 0.8 * len(p)]


@cache
def default_fluency() -> Fluency:
    return fit(manual_paragraphs())
