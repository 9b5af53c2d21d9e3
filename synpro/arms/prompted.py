"""Prompted rephrase: a fixed, untrained generator (the WRAP / Nemotron-CC style baseline)."""

from pydantic import Field

from synpro.arms.base import ARMS
from synpro.arms.synthetic import SyntheticArm, SyntheticOptions


class PromptedOptions(SyntheticOptions):
    operations: list[str] = Field(default_factory=lambda: ["rephrase"], min_length=1)


@ARMS.register("prompted")
class Prompted(SyntheticArm):
    Options = PromptedOptions
