"""format: 1 if the operation's heading occurs exactly once in the full answer, else 0."""

from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("format")
class Format(Reward):
    name = "format"

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        return [float(self.operation.heading_count(a) == 1) for a in answers]
