"""faithfulness (reformat): the share of the output's "Topic: … Content: …" entries that the source supports
(at most `max_entries` are read; no entries → 0).

Offline, an entry is supported when its topic and content (MiniLM) are at least `min_similarity` close to
some passage of the source, every number it states occurs in the source, and at least `min_name_overlap` of
its names (capitalised words, identifiers) do. With `scorer: llm` a verifier sees {source} and {entry}
and answers 1 or 0; an unparseable verdict counts as unsupported and is counted in `failures`.
"""

from __future__ import annotations

import re

import numpy as np

from synpro.generation.chunking import split_chunks
from synpro.generation.operations.reformat import parse_entries
from synpro.rewards.base import REWARDS, Reward
from synpro.rewards.judges import judge_for

PASSAGE_CHARS = 400
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NAME = re.compile(r"\b(?:[A-Z][A-Za-z0-9]+|\w+[_.]\w+(?:[_.]\w+)*)\b")


def facts_kept(entry: str, source: str, min_name_overlap: float) -> bool:
    """Every number of the entry and enough of its names occur in the source."""
    if not set(_NUMBER.findall(entry)) <= set(_NUMBER.findall(source)):
        return False
    names = set(_NAME.findall(entry))
    return not names or len(names & set(_NAME.findall(source))) / len(names) >= min_name_overlap


@REWARDS.register("faithfulness")
class Faithfulness(Reward):
    name = "faithfulness"
    kinds = frozenset({"reformat"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        cfg = self.spec.rewards.faithfulness
        entries = [[f"{t}\n{c}" for t, c in parse_entries(out)][:cfg.max_entries] for out in self.answers(answers)]
        flat = [(i, e) for i, es in enumerate(entries) for e in es]
        if not flat:
            return [0.0] * len(sources)
        if cfg.scorer == "llm":
            verdicts = judge_for(cfg.judge, "rewards.faithfulness.judge").rate(
                source=[sources[i] for i, _ in flat], entry=[e for _, e in flat])
            self.failures += sum(v is None for v in verdicts)
            supported = [v is not None and v >= 0.5 for v in verdicts]
        else:
            supported = self._offline(sources, flat)
        hits = np.zeros(len(sources))
        np.add.at(hits, [i for i, _ in flat], np.asarray(supported, dtype=float))
        return [float(hits[i] / len(es)) if es else 0.0 for i, es in enumerate(entries)]

    def _offline(self, sources: list[str], flat: list[tuple[int, str]]) -> list[bool]:
        from synpro.generation.metrics import embed

        cfg = self.spec.rewards.faithfulness
        needed = sorted({i for i, _ in flat})
        passages = {i: split_chunks(sources[i], PASSAGE_CHARS) or [""] for i in needed}
        owners = [(i, p) for i in needed for p in passages[i]]
        vectors = embed([p for _, p in owners] + [e for _, e in flat])
        passage_vecs, entry_vecs = vectors[:len(owners)], vectors[len(owners):]
        owner = np.asarray([i for i, _ in owners])
        out = []
        for vec, (i, entry) in zip(entry_vecs, flat):
            closest = float(np.max(passage_vecs[owner == i] @ vec))
            out.append(closest >= cfg.min_similarity and facts_kept(entry, sources[i], cfg.min_name_overlap))
        return out

    def check(self) -> None:
        if self.spec.rewards.faithfulness.scorer == "llm":
            judge_for(self.spec.rewards.faithfulness.judge, "rewards.faithfulness.judge")

    def settings(self) -> dict:
        return {**super().settings(), **self.spec.rewards.faithfulness.settings()}
