"""SynPro: organic plus the rephrase and reformat sets (cumulative across refreshes, method.md §2.7)."""

from pydantic import Field

from synpro.arms.base import ARMS
from synpro.arms.synthetic import SyntheticArm, SyntheticOptions


class SynProOptions(SyntheticOptions):
    operations: list[str] = Field(default_factory=lambda: ["rephrase", "reformat"], min_length=1)


@ARMS.register("synpro")
class SynPro(SyntheticArm):
    Options = SynProOptions
