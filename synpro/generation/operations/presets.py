"""Named prompt presets: the texts an operation is prompted with, chosen per operation by `preset:` in the spec.

An operation without a preset keeps its registered texts, tuned on the packaged 135M CPU generator (the text
first, a short task, the heading pre-filled). `release` is the authors' release as method.md §2 and §6
describe it, in our words: a system prompt and the task before the text, rephrase with the release's
boilerplate-removal rules, reformat naming the five entry kinds, and no pre-filled heading (the generator
writes it, and the format reward checks it). Its headings are the operations' own, which the release shares.
Each operation's module registers its texts here, beside its CPU-tuned ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Texts:
    system_prompt: str
    prompt: str  # with a {text} slot
    heading: str
    prefill_heading: bool


PRESETS: dict[str, dict[str, Texts]] = {"release": {}}  # each operation module adds its own texts


def preset_texts(preset: str, kind: str) -> Texts | None:
    """The preset's texts for an operation kind; None when the preset does not cover that kind."""
    return PRESETS[preset].get(kind)
