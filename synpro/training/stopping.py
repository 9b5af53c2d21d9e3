"""Stop conditions for a pretraining run: where a SynPro round ends and its generators are refreshed.

Both are callbacks whose `on_eval` returns True to stop and whose state is saved in every
checkpoint, so a killed run resumes knowing what it had seen.

- `Plateau`: the validation loss improved by less than `min_improvement` (relative) over the last
  `window` evaluations. Our choice (method.md §2: the paper picked its plateaus by hand).
- `StopAt`: a fixed token count, as the paper's hand-picked refresh points.
"""

from __future__ import annotations

from synpro.training.callbacks import Callback
from synpro.training.result import EvalPoint


class Plateau(Callback):
    name = "plateau"

    def __init__(self, window: int, min_improvement: float, min_tokens: int = 0):
        self.window, self.min_improvement, self.min_tokens = window, min_improvement, min_tokens
        self.losses: list[float] = []

    def on_eval(self, point: EvalPoint) -> bool:
        if point.tokens == 0:
            return False
        self.losses.append(point.val_loss)
        if point.tokens < self.min_tokens or len(self.losses) <= self.window:
            return False
        before, now = self.losses[-self.window - 1], self.losses[-1]
        return (before - now) / abs(before) < self.min_improvement

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.losses = list(state["losses"])


class StopAt(Callback):
    name = "stop_at"

    def __init__(self, tokens: int):
        self.tokens = tokens

    def on_eval(self, point: EvalPoint) -> bool:
        return point.tokens >= self.tokens
