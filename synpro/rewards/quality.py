"""quality: rater(output) − rater(source), both on a 1–5 scale.

The rater is the offline fluency classifier (synpro.rewards.fluency) or an LLM judge whose prompt has a
{text} slot (DataMan-style). A source is rated once per process. An unparseable rating of either text gives
0 and is counted in `failures` (the authors' release turns it into −rater(source)). An empty output is not
sent to the judge: it gets the bottom of the scale.
"""

from synpro.influence.cache import text_hash
from synpro.rewards.base import REWARDS, Reward
from synpro.rewards.judges import judge_for

BOTTOM = 1.0


@REWARDS.register("quality")
class Quality(Reward):
    name = "quality"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sources: dict[str, float | None] = {}

    def score(self, sources: list[str], answers: list[str]) -> list[float]:
        fresh = sorted({text_hash(s): s for s in sources if text_hash(s) not in self._sources}.items())
        if fresh:
            self._sources.update(zip([h for h, _ in fresh], self._rate([s for _, s in fresh])))
        outputs = self.answers(answers)
        rated = self._rate(outputs)
        values = []
        for source, out in zip(sources, rated):
            base = self._sources[text_hash(source)]
            if out is None or base is None:
                self.failures += 1
                values.append(0.0)
            else:
                values.append(out - base)
        return values

    def _rate(self, texts: list[str]) -> list[float | None]:
        cfg = self.spec.rewards.quality
        if cfg.scorer == "offline":
            from synpro.rewards.fluency import default_fluency

            return default_fluency().score(texts)
        judged = iter(judge_for(cfg.judge, "rewards.quality.judge").rate(text=[t for t in texts if t.strip()]))
        return [next(judged) if t.strip() else BOTTOM for t in texts]

    def check(self) -> None:
        if self.spec.rewards.quality.scorer == "llm":
            judge_for(self.spec.rewards.quality.judge, "rewards.quality.judge")

    def settings(self) -> dict:
        from synpro.rewards.fluency import VERSION

        cfg = self.spec.rewards.quality
        return {**super().settings(), "scorer": cfg.scorer,
                **({"fluency_version": VERSION} if cfg.scorer == "offline" else cfg.judge.identity())}
