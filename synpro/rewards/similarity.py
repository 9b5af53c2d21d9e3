"""similarity (rephrase): 1 if the MiniLM cosine of output and source exceeds the threshold, else 0; or the
cosine itself (`continuous`). The paper uses BERTScore-F1 > 0.65 with deberta-large-mnli, which no package
ships; MiniLM is the same scorer as the generation stage's similarity filter."""

from synpro.generation.metrics import similarities
from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("similarity")
class Similarity(Reward):
    name = "similarity"
    kinds = frozenset({"rephrase"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        cfg = self.spec.rewards.similarity
        cosines = similarities(sources, self.answers(answers))
        return [c if cfg.continuous else float(c > cfg.threshold) for c in cosines]

    def settings(self) -> dict:
        return {**super().settings(), "scorer": "all-MiniLM-L6-v2", **self.spec.rewards.similarity.model_dump()}
