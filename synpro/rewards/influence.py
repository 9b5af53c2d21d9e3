"""influence: I(output) − I(source), I(y) = L(y; θ) − L(y; θ′) (see synpro.influence.scoring).

An extracted output shorter than rewards.influence_min_chars (paper: 500) scores 0, as if it were the source.
"""

from synpro.errors import InputError
from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("influence")
class Influence(Reward):
    name = "influence"

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        outputs = self.answers(answers)
        keep = [i for i, out in enumerate(outputs) if len(out) >= self.spec.rewards.influence_min_chars]
        values = [0.0] * len(outputs)
        if keep:
            scores = self._scorer().influence([outputs[i] for i in keep] + [sources[i] for i in keep])
            for n, i in enumerate(keep):
                values[i] = scores[n] - scores[len(keep) + n]
        return values

    def _scorer(self):
        if self.influence is None:
            raise InputError.one("the influence reward needs θ and its probe θ′", key="rewards.weights",
                                 hint="pass --checkpoint DIR or --arm NAME, set influence.url, or leave "
                                      "influence out (--rewards)")
        return self.influence.open()

    def check(self) -> None:
        self._scorer()

    def settings(self) -> dict:
        source = self.influence
        return {**super().settings(), "min_chars": self.spec.rewards.influence_min_chars,
                "max_tokens": source.max_tokens if source else None,
                "scorer": (source.url or str(source.probe_dir)) if source else None}
