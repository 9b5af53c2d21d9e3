"""What every rewrite operation shares: prompt building, heading-based extraction and the post-filters.

An operation's answer must follow a fixed heading line; the text after it is kept. Checks on each
chunk's answer (empty, missing or repeated heading, cut off by the token limit, unparseable body)
and on each window's re-joined output (length, length ratio against the source, similarity) give
verdicts; an output with any failed verdict never reaches training data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING

from synpro.generation.operations.presets import preset_texts
from synpro.generation.text import length_ratio, repetition
from synpro.registry import Registry

if TYPE_CHECKING:
    from synpro.spec import OperationSpec

Messages = list[dict[str, str]]

# Failure reasons, as recorded and counted.
EMPTY = "empty"
MISSING_HEADING = "missing_heading"
REPEATED_HEADING = "repeated_heading"
TRUNCATED = "truncated"
NO_ENTRIES = "no_entries"
TOO_SHORT = "too_short"
RATIO_LOW = "length_ratio_low"
RATIO_HIGH = "length_ratio_high"
LOW_SIMILARITY = "low_similarity"
REPETITIVE = "repetitive"


@dataclass(frozen=True)
class Filters:
    min_chars: int
    min_length_ratio: float
    max_length_ratio: float
    min_similarity: float | None = None  # None (or <= -1): not checked, and no embedding model is loaded
    max_repetition: float = 0.3  # share of repeated word 4-grams (small generators loop), beyond the source's own

    @property
    def checks_similarity(self) -> bool:
        return self.min_similarity is not None and self.min_similarity > -1


@dataclass(frozen=True)
class Extraction:
    """One chunk's answer: the kept text, or the reasons it cannot be kept."""

    text: str
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    name: str
    system_prompt: str
    prompt: str  # template with a {text} slot
    heading: str
    filters: Filters
    # Small prompted generators often open with their own words; starting the answer with the heading
    # (and `body_start`, the first words of the body) keeps them on task. The answer is then
    # prefix + continuation, and a repeated heading still fails.
    prefill_heading: bool = True
    body_start: str = ""

    @property
    def prefix(self) -> str:
        """What every answer starts with before the generator writes a token."""
        return f"{self.heading}\n{self.body_start}" if self.prefill_heading else ""

    def messages(self, chunk: str) -> Messages:
        user = self.prompt.replace("{text}", chunk)  # not str.format: organic text is full of braces
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
        return messages + [{"role": "assistant", "content": self.prefix}] if self.prefix else messages

    def extract(self, raw: str, finished: bool = True) -> Extraction:
        """The text after the heading, in the operation's canonical form."""
        if not raw.strip():
            return Extraction("", (EMPTY,))
        count = self.heading_count(raw)
        if not count:
            return Extraction("", (MISSING_HEADING,))
        failures = [REPEATED_HEADING] if count > 1 else []
        body, body_failures = self.render(self.answer(raw), finished)
        failures += body_failures
        if not body and not failures:
            failures.append(EMPTY)
        return Extraction(body if not failures else "", tuple(failures))

    def heading_count(self, raw: str) -> int:
        """How often the heading occurs in an answer (the format check: exactly once)."""
        return len(_heading_pattern(self.heading).findall(raw))

    def answer(self, raw: str) -> str:
        """The text after the heading's first occurrence, stripped; no heading gives "". The one extraction
        rule of SynPro: the post-filters and every reward use it."""
        found = _heading_pattern(self.heading).search(raw)
        return raw[found.end():].strip() if found else ""

    def reasons(self) -> list[str]:
        """Every failure reason this operation can give, for complete per-reason counts."""
        reasons = [EMPTY, MISSING_HEADING, REPEATED_HEADING, TRUNCATED, TOO_SHORT, RATIO_LOW, RATIO_HIGH, REPETITIVE]
        return reasons + [LOW_SIMILARITY] if self.filters.checks_similarity else reasons

    def render(self, body: str, finished: bool) -> tuple[str, list[str]]:
        """The kept form of an answer's body, plus any failure reasons: here the body itself, which
        must not have been cut off by the token limit."""
        return body, [] if finished else [TRUNCATED]

    def judge(self, source: str, output: str, similarity: float | None) -> dict[str, bool]:
        """Window-level verdicts (True = passes) on the re-joined output."""
        f = self.filters
        ratio = length_ratio(source, output)
        verdicts = {TOO_SHORT: len(output) >= f.min_chars, RATIO_LOW: ratio >= f.min_length_ratio,
                    RATIO_HIGH: ratio <= f.max_length_ratio,
                    REPETITIVE: repetition(output) <= max(f.max_repetition, repetition(source) + 0.1)}
        if f.checks_similarity:
            verdicts[LOW_SIMILARITY] = similarity is not None and similarity >= f.min_similarity
        return verdicts

    def configured(self, spec: "OperationSpec") -> "Operation":
        """These defaults, then the spec's prompt preset, then its explicit fields."""
        preset = preset_texts(spec.preset, spec.kind) if spec.preset else None
        texts = dict(vars(preset)) if preset else {}
        texts |= {k: getattr(spec, k) for k in ("system_prompt", "prompt", "heading", "prefill_heading")
                  if getattr(spec, k) is not None}
        limits = {k: getattr(spec, k) for k in ("min_chars", "min_length_ratio", "max_length_ratio", "min_similarity",
                                                "max_repetition") if getattr(spec, k) is not None}
        return replace(self, **texts, filters=replace(self.filters, **limits))


@cache
def _heading_pattern(heading: str) -> re.Pattern[str]:
    """The heading in any case and spacing, optionally in markdown emphasis, with "X is" also as "X's",
    and up to 40 characters of qualifier before a final colon ("... version of the document:")."""
    words = heading.strip().removesuffix(":").split()
    parts = [re.escape(words[0])]
    for word in words[1:]:
        parts.append(r"(?:\s+is|['’]s)" if word.lower() == "is" else r"\s+" + re.escape(word))
    colon = r"[^\n:]{0,40}:" if heading.strip().endswith(":") else ""
    return re.compile(r"[*_#]*[ \t]*" + "".join(parts) + colon + r"[*_]*", re.IGNORECASE)


OPERATIONS: Registry[Operation] = Registry("operation")
