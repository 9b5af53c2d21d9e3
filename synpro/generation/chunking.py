"""Organic documents → windows of pretraining tokens → chunks small enough for the generator.

Windows are measured in the PRETRAINING tokenizer's tokens (the unit the budget counts) and cut
at token offsets, so joined they give back the document exactly. Every window is named
`<doc id>:<index>`, which links each synthetic document to its source and keys resumes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Cut preferences inside a chunk, best first: blank line, sentence end, line break, any space.
_BOUNDARIES = (re.compile(r"\n[ \t]*\n\s*"), re.compile(r"(?<=[.!?:;])[\"')\]]?\s+"), re.compile(r"\n\s*"),
               re.compile(r"\s+"))


@dataclass(frozen=True)
class Window:
    doc_id: str
    index: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc_id}:{self.index}"


def iter_docs(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) of each organic document, streamed from the data stage's JSONL."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                yield str(doc["id"]), doc["text"]


def doc_windows(doc_id: str, text: str, tokenizer: "PreTrainedTokenizerBase", window_tokens: int) -> list[Window]:
    """Consecutive pieces of at most window_tokens tokens each, cut where a token starts."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cuts = [0]
    for k in range(window_tokens, len(offsets), window_tokens):
        cuts.append(max(cuts[-1], offsets[k][0]))  # byte pieces of one character share its offsets
    cuts.append(len(text))
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    return [Window(doc_id, i, piece) for i, piece in enumerate(pieces)]


def iter_windows(docs_path: Path, tokenizer: "PreTrainedTokenizerBase", window_tokens: int,
                 max_windows: int | None = None) -> Iterator[Window]:
    """Every window of the pool in document order, the first max_windows only when given."""
    count = 0
    for doc_id, text in iter_docs(docs_path):
        for window in doc_windows(doc_id, text, tokenizer, window_tokens):
            if max_windows is not None and count >= max_windows:
                return
            count += 1
            yield window


def split_chunks(text: str, max_chars: int) -> list[str]:
    """Pieces of at most max_chars, of about equal size, cut at the best boundary near each target.

    Equal sizes avoid a tiny last chunk that the generator would rewrite badly.
    """
    chunks = []
    rest = text.strip()
    while len(rest) > max_chars:
        target = len(rest) // math.ceil(len(rest) / max_chars)
        cut = _best_cut(rest, lo=target // 2, hi=max_chars, target=target)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _best_cut(text: str, lo: int, hi: int, target: int) -> int:
    """End of the highest-ranked boundary within [lo, hi] closest to target; a hard cut at hi if none."""
    for pattern in _BOUNDARIES:
        ends = [m.end() for m in pattern.finditer(text, 0, hi + 1) if lo <= m.start() and m.end() <= hi]
        if ends:
            return min(ends, key=lambda e: abs(e - target))
    return hi
