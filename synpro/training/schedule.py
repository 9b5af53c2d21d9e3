"""Learning rate as a function of tokens seen, so runs with different batch sizes share a schedule.

The default ("constant") is the paper's: linear warmup, then flat, which makes every intermediate
checkpoint a valid point of the learning curve. "cosine" and "linear" decay from the end of warmup
to `min_lr_ratio * lr` at the total budget, for comparison runs.
"""

from __future__ import annotations

import math

from synpro.spec import TrainingSpec


def learning_rate(tokens: int, *, training: TrainingSpec, total_tokens: int) -> float:
    """The LR for the step that brings training to `tokens` tokens seen."""
    peak = training.lr
    warmup = training.warmup_tokens
    if tokens < warmup:
        return peak * tokens / warmup
    if training.schedule == "constant" or total_tokens <= warmup:
        return peak
    floor = peak * training.min_lr_ratio
    progress = min(1.0, (tokens - warmup) / (total_tokens - warmup))
    if training.schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak - (peak - floor) * progress
