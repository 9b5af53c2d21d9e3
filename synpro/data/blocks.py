"""Cutting long texts into blocks that keep their layout (corpus readers and builtin corpora share it)."""

from __future__ import annotations


def split_blocks(text: str, max_chars: int) -> list[str]:
    """Cut a long text into blocks of at most max_chars, at paragraph breaks where possible.

    Cuts fall on the last blank line within the limit, else the last line break, else the last space,
    so the text inside each block keeps its exact layout.
    """
    blocks = []
    rest = text.strip()
    while len(rest) > max_chars:
        cut = next((i for sep in ("\n\n", "\n", " ") if (i := rest.rfind(sep, 1, max_chars)) > 0), max_chars)
        blocks.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        blocks.append(rest)
    return blocks
