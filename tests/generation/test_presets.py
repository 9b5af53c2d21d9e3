"""Prompt presets: `release` replaces an operation's CPU-tuned texts and pre-fills nothing; explicit fields win."""

import pytest

from synpro.errors import InputError
from synpro.generation.operations import OPERATIONS
from synpro.spec import OperationSpec, parse_spec


def test_the_release_preset_prompts_without_a_prefilled_heading():
    for kind in ("rephrase", "reformat"):
        own = OPERATIONS.get(kind)
        release = own.configured(OperationSpec(kind=kind, preset="release"))
        assert release.prompt != own.prompt and "{text}" in release.prompt
        assert release.heading == own.heading and release.prefix == "" and own.prefix
        assert release.messages("a text")[-1]["role"] == "user"  # the generator writes the heading itself
    rephrase = OPERATIONS.get("rephrase").configured(OperationSpec(kind="rephrase", preset="release",
                                                                   heading="Rewritten:"))
    assert rephrase.heading == "Rewritten:" and "boilerplate" in rephrase.prompt


def test_an_unknown_preset_is_located():
    with pytest.raises(InputError) as err:
        parse_spec("experiment: {name: p}\nbudget: {unique_tokens: 1000, total_tokens: 2000}\n"
                   "generation: {operations: {r: {kind: rephrase, preset: fancy}}}\n")
    assert err.value.problems[0].key == "generation.operations.r.preset"
