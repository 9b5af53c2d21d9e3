"""length (rephrase): 1 if 0 < len(output) ≤ max_ratio · len(source) (paper: 1.25), else 0.

An empty output never passes (the authors' release lets it).
"""

from synpro.generation.text import length_ratio
from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("length")
class Length(Reward):
    name = "length"
    kinds = frozenset({"rephrase"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        limit = self.spec.rewards.length.max_ratio
        return [float(bool(out) and length_ratio(src, out) <= limit) for src, out in zip(sources, self.answers(answers))]

    def settings(self) -> dict:
        return {**super().settings(), **self.spec.rewards.length.model_dump()}
