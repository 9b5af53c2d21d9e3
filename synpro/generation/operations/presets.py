"""Named prompt presets: the texts an operation is prompted with, chosen per operation by `preset:` in the spec.

An operation without a preset keeps its registered texts, tuned on the packaged 135M CPU generator (the text
first, a short task, the heading pre-filled). `release` is the authors' release as method.md §2 and §6
describe it, in our words: a system prompt and the task before the text, rephrase with the release's
boilerplate-removal rules, reformat naming the five entry kinds, and no pre-filled heading (the generator
writes it, and the format reward checks it). Its headings are the operations' own, which the release shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from synpro.generation.operations.reformat import HEADING as REFORMAT_HEADING
from synpro.generation.operations.reformat import MAX_ENTRIES
from synpro.generation.operations.rephrase import HEADING as REPHRASE_HEADING


@dataclass(frozen=True)
class Texts:
    system_prompt: str
    prompt: str  # with a {text} slot
    heading: str
    prefill_heading: bool


RELEASE = {
    "rephrase": Texts(
        system_prompt="You are a helpful assistant that rewrites web documents into clean, faithful text.",
        prompt=("Paraphrase the document below. Rules:\n"
                "- Remove content that is clearly not part of the document itself: navigation menus, "
                "advertisements, cookie and subscription notices, share buttons, footers and similar boilerplate.\n"
                "- Keep every piece of information the document gives, in its order; add nothing that it does not "
                "say, and do not comment on it.\n"
                "- Keep its structure: paragraphs, lists, tables, code blocks and markup.\n"
                "- Write clear, fluent, well-formed text.\n"
                f'Begin your answer with "{REPHRASE_HEADING}" on its own line, followed by the paraphrase only.\n\n'
                "Document:\n{text}"),
        heading=REPHRASE_HEADING, prefill_heading=False),
    "reformat": Texts(
        system_prompt="You are a helpful assistant that turns web documents into study entries.",
        prompt=(f"Write up to {MAX_ENTRIES} entries about the document below. Each entry is one of: factual "
                "(what the document states), analytical (why or how something in it holds), conceptual (an idea "
                "it explains), comparative (how things in it differ) or problem-solving (a worked question that "
                "it answers). Use only information from the document. Write every entry in plain text as:\n"
                "Topic: <a short title>\nContent: <the entry>\n"
                f'Begin your answer with "{REFORMAT_HEADING}" on its own line, followed by the entries only.\n\n'
                "Document:\n{text}"),
        heading=REFORMAT_HEADING, prefill_heading=False),
}

PRESETS: dict[str, dict[str, Texts]] = {"release": RELEASE}


def preset_texts(preset: str, kind: str) -> Texts | None:
    """The preset's texts for an operation kind; None when the preset does not cover that kind."""
    return PRESETS[preset].get(kind)
