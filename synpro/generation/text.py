"""Cheap text measures shared by the filters and the set metrics."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def length_ratio(source: str, output: str) -> float:
    return len(output) / max(len(source), 1)


def novelty(source: str, output: str, n: int = 3) -> float:
    """Share of the output's distinct word n-grams that the source does not contain."""
    out = set(_ngrams(output, n))
    return len(out - set(_ngrams(source, n))) / len(out) if out else 0.0


def repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: near 0 for prose, near 1 for a loop."""
    grams = _ngrams(text, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
