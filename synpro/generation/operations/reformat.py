"""Reformat: up to eight plain-text "Topic: ... Content: ..." entries drawn from the source."""

from __future__ import annotations

import re
from dataclasses import dataclass

from synpro.generation.operations.base import OPERATIONS, NO_ENTRIES, TRUNCATED, Filters, Operation
from synpro.generation.operations.presets import PRESETS, Texts

HEADING = "Here are the entries:"
MAX_ENTRIES = 8
# A list marker: "-", "*", "+", "•", "1.", "1)", "(1)".
_MARKER = r"(?:[-*+•]|\(?\d+[.)])"
# "Topic:" opens an entry at a line start, after an optional list marker and markdown emphasis ("1. **Topic:**").
_TOPIC = re.compile(rf"^[ \t]*{_MARKER}?[ \t]*[*_#]*[ \t]*topic[ \t]*[*_]*[ \t]*:[*_]*", re.I | re.M)
# "Content:" anywhere after the topic: on the next line (possibly bulleted) or on the topic's own line, which is
# how the format's own name "Topic: … Content: …" reads.
_CONTENT = re.compile(rf"(?:^[ \t]*{_MARKER}[ \t]+)?[*_]*\bcontent[ \t]*[*_]*[ \t]*:[*_]*", re.I | re.M)
# What separates a one-line entry's topic from its "Content:" label ("Topic: A - Content: b", "A | Content: b").
_SEPARATORS = " \t\n-–—|;,*_"


def parse_entries(body: str) -> list[tuple[str, str]]:
    """(topic, content) pairs in order, one per "Topic:" label, written on one line or on two, numbered,
    bulleted or plain. The content follows the first "Content:" label, or, when a small generator leaves the
    label out, is the text after the topic's line; entries lacking either are dropped."""
    starts = list(_TOPIC.finditer(body))
    entries = []
    for here, after in zip(starts, starts[1:] + [None]):
        block = body[here.end(): after.start() if after else len(body)]
        label = _CONTENT.search(block)
        if label is not None:
            topic, content = block[:label.start()], block[label.end():]
        else:
            topic, _, content = block.partition("\n")
        topic = topic.strip(_SEPARATORS)
        if topic and content.strip():
            entries.append((topic, content.strip()))
    return entries


def render_entries(entries: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"Topic: {topic}\nContent: {content}" for topic, content in entries)


@dataclass(frozen=True)
class Reformat(Operation):
    def reasons(self) -> list[str]:
        return super().reasons() + [NO_ENTRIES]

    def render(self, body: str, finished: bool) -> tuple[str, list[str]]:
        """The first MAX_ENTRIES complete entries: an answer cut off by the token limit loses its last,
        possibly partial, entry unless there are more than enough."""
        entries = parse_entries(body)
        if not finished and len(entries) <= MAX_ENTRIES:
            entries = entries[:-1]
        if entries:
            return render_entries(entries[:MAX_ENTRIES]), []
        return "", [NO_ENTRIES] if finished else [TRUNCATED, NO_ENTRIES]


# Tuned on SmolLM2-135M-Instruct: the text first, then the task with a two-entry format example.
REFORMAT = OPERATIONS.register("reformat")(Reformat(
    name="reformat",
    system_prompt="You are an expert teacher. You write study notes that use only facts from the given text.",
    prompt=("Text:\n{text}\n\n"
            f"Task: write study notes about the text above, at most {MAX_ENTRIES}. Each note explains one point "
            "of the text (a fact, an analysis, a concept, a comparison or a worked problem). Use this plain-text "
            "format:\n\n"
            "Topic: <a short title>\nContent: <a few sentences with facts from the text>\n\n"
            "Topic: <another short title>\nContent: <a few sentences with facts from the text>\n\n"
            f'Begin your answer with "{HEADING}"'),
    heading=HEADING,
    body_start="Topic:",
    filters=Filters(min_chars=200, min_length_ratio=0.15, max_length_ratio=1.5, min_similarity=0.5),
))

# The authors' release (method.md §2, §6), in our words: the task first, naming the five kinds of entry.
PRESETS["release"]["reformat"] = Texts(
    system_prompt="You are a helpful assistant that turns web documents into study entries.",
    prompt=(f"Write up to {MAX_ENTRIES} entries about the document below. Each entry is one of: factual "
            "(what the document states), analytical (why or how something in it holds), conceptual (an idea "
            "it explains), comparative (how things in it differ) or problem-solving (a worked question that "
            "it answers). Use only information from the document. Write every entry in plain text as:\n"
            "Topic: <a short title>\nContent: <the entry>\n"
            f'Begin your answer with "{HEADING}" on its own line, followed by the entries only.\n\n'
            "Document:\n{text}"),
    heading=HEADING, prefill_heading=False)
