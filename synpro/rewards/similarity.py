"""similarity (rephrase): 1 if output and source are similar beyond the threshold, else 0; or the similarity
itself (`continuous`). The scorer is MiniLM's cosine (offline, the same scorer as the generation stage's
similarity filter) or, with `scorer: bertscore`, BERTScore F1 as the release computes it (deberta-large-mnli,
layer 18, F1 > 0.65)."""

from synpro.rewards.base import REWARDS, Reward


@REWARDS.register("similarity")
class Similarity(Reward):
    name = "similarity"
    kinds = frozenset({"rephrase"})

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        cfg = self.spec.rewards.similarity
        outputs = self.answers(answers)
        if cfg.scorer == "bertscore":
            from synpro.rewards.bertscore import f1

            values = f1(sources, outputs, cfg.model, cfg.layer)
        else:
            from synpro.generation.metrics import similarities

            values = similarities(sources, outputs)
        return [v if cfg.continuous else float(v > cfg.threshold) for v in values]

    def check(self) -> None:
        cfg = self.spec.rewards.similarity
        if cfg.scorer == "bertscore":
            from synpro.rewards.bertscore import DEFAULT_MODEL, _load

            _load(cfg.model or DEFAULT_MODEL)

    def settings(self) -> dict:
        cfg = self.spec.rewards.similarity
        if cfg.scorer == "bertscore":
            from synpro.rewards.bertscore import DEFAULT_LAYERS, DEFAULT_MODEL

            model = cfg.model or DEFAULT_MODEL
            return {**super().settings(), "scorer": "bertscore-f1", "model": model,
                    "layer": cfg.layer if cfg.layer is not None else DEFAULT_LAYERS.get(model, "last"),
                    "threshold": cfg.threshold, "continuous": cfg.continuous}
        return {**super().settings(), "scorer": "all-MiniLM-L6-v2", "threshold": cfg.threshold,
                "continuous": cfg.continuous}
