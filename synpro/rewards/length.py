"""length (rephrase): 1 if min_ratio · len(source) ≤ len(output) ≤ max_ratio · len(source), else 0.

Paper: max_ratio 1.25 and no lower bound. An empty output never passes (the authors' release lets it).
"""

from synpro.generation.text import length_ratio
from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("length")
class Length(Reward):
    name = "length"
    kinds = frozenset({"rephrase"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        limits = self.spec.rewards.length
        return [float(bool(out) and limits.min_ratio <= length_ratio(src, out) <= limits.max_ratio)
                for src, out in zip(sources, self.answers(answers))]

    def settings(self) -> dict:
        return {**super().settings(), **self.spec.rewards.length.model_dump()}
