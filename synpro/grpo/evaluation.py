"""Held-out evaluation of a generator: the operation's post-filter pass rate and the mean weighted reward.

One sampled completion per held-out prompt, with the training sampling settings. A prompt passes when its
answer (pre-filled start + completion) survives every post-filter the synthesize stage applies: the chunk
checks (heading once, not cut off, a body) and the window checks (length, length ratio, repetition,
similarity) on the chunk as its own window. Generation runs on a forked RNG, so evaluating during training
leaves the training run's random stream, and so its result, unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from synpro.generation.backends import Completion, Sampling
    from synpro.generation.operations.base import Operation
    from synpro.rewards.base import Reward


@dataclass
class HeldOut:
    """A held-out evaluation's summary and its (source, answer) samples."""

    pass_rate: float
    reward_mean: float
    rewards: dict[str, float]
    failures: dict[str, int]
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def row(self, step: int) -> dict[str, Any]:
        return {"kind": "eval", "step": step, "pass_rate": self.pass_rate, "reward_mean": self.reward_mean,
                "rewards": self.rewards, "failures": self.failures, "seconds": self.seconds}


def judge_answers(op: "Operation", sources: Sequence[str], raws: Sequence[str],
                  finished: Sequence[bool]) -> list[list[str]]:
    """The post-filters' failure reasons per answer ([] = it passes); only answers that reach the similarity
    check are embedded."""
    from synpro.generation.metrics import similarities

    bodies = [op.extract(r, f) for r, f in zip(raws, finished)]
    reach = [i for i, b in enumerate(bodies) if not b.failures]
    sims: dict[int, float] = {}
    if op.filters.checks_similarity and reach:
        sims = dict(zip(reach, similarities([sources[i] for i in reach], [bodies[i].text for i in reach])))
    return [list(body.failures) or [reason for reason, ok in op.judge(source, body.text, sims.get(i)).items() if not ok]
            for i, (source, body) in enumerate(zip(sources, bodies))]


def evaluate(model, tokenizer, op: "Operation", rows: Sequence[dict[str, Any]], rewards: Sequence["Reward"],
             weights: Sequence[float], sampling: "Sampling", *, batch_size: int = 8, samples: int = 0) -> HeldOut:
    """Generate one answer per held-out row with `model` and score it; the model's train/eval mode is kept."""
    from synpro.generation.backends.transformers_backend import TransformersBackend
    from synpro.rewards.scoring import score_pairs

    started = time.perf_counter()
    training = model.training
    try:
        completions: list[Completion] = TransformersBackend(model, tokenizer, batch_size).generate(
            [r["messages"] for r in rows], sampling)
    finally:
        model.train(training)
    sources = [r["source"] for r in rows]
    raws = [op.prefix + c.text for c in completions]
    failed = judge_answers(op, sources, raws, [c.finished for c in completions])
    scored = score_pairs(sources, raws, rewards, weights) if rewards else [{"total": 0.0} for _ in rows]
    n = max(len(rows), 1)
    counts: dict[str, int] = {}
    for reasons in failed:
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return HeldOut(
        pass_rate=sum(not f for f in failed) / n,
        reward_mean=sum(s["total"] for s in scored) / n,
        rewards={r.__name__: sum(s[r.__name__] for s in scored) / n for r in rewards},
        failures=dict(sorted(counts.items())),
        seconds=time.perf_counter() - started,
        samples=[{"window": r["window"], "source": r["source"], "answer": raw, "finished": c.finished,
                  "failures": f, "rewards": s} for r, raw, c, f, s in
                 list(zip(rows, raws, completions, failed, scored))[:samples]],
    )
