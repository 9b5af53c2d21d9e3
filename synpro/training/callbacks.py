"""Hooks into a training run (OLMo-core style): subclass `Callback`, override what you need.

Callbacks see values, never the model or optimizer, so they cannot change what is trained. They run
on rank 0 only. To end a run early (a plateau), `on_eval` returns True: the trainer commits that
point's checkpoint and finishes the run normally. A callback with `state_dict()` / `load_state_dict()`
(and optionally a `name`) has its state saved in every checkpoint and restored on resume.
An exception from a callback stops the run like a crash would; the run is left resumable because
checkpoints are committed atomically.

Delivery is at-least-once: `on_eval` runs before the point's checkpoint is committed and `on_end`
before the completion marker, so after an interruption a resumed run may deliver the same point
(same `tokens`) again. Key what you record by `tokens`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from synpro.training.result import EvalPoint, TrainResult


class Callback:
    def on_step(self, step: int, tokens: int, loss: torch.Tensor, lr: float) -> None:
        """After every optimizer step. `loss` is a 0-dim tensor on the training device:
        `.item()` synchronises CUDA, so only read it when you need it. Only overridden
        `on_step` methods are called at all."""

    def on_eval(self, point: "EvalPoint") -> bool | None:
        """After each evaluation (including the one at tokens=0 of a fresh run); True asks to stop."""

    def on_checkpoint(self, path: Path, point: "EvalPoint") -> None:
        """After the checkpoint at `point` is committed at `path`."""

    def on_end(self, result: "TrainResult") -> None:
        """After the final model is written, before the run is marked complete."""


class RichProgress(Callback):
    """A live bar: tokens, tokens/s, MFU (given the FLOPs per token and the peak FLOP/s of every device
    together), train loss and LR; one line per evaluation."""

    REFRESH_SECONDS = 0.5  # how often the loss is read (a CUDA sync) and the bar redrawn

    def __init__(self, total_tokens: int, start_tokens: int, *, flops_per_token: int | None = None,
                 peak: float | None = None):
        self._flops, self._peak = flops_per_token, peak
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} tok"),
            TextColumn("{task.fields[rate]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"), TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("train", total=total_tokens, completed=start_tokens,
                                             rate="- tok/s", loss="-", lr="-")
        self._start_tokens = start_tokens
        self._start = time.perf_counter()
        self._shown = 0.0

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_step(self, step: int, tokens: int, loss: torch.Tensor, lr: float) -> None:
        now = time.perf_counter()
        if now - self._shown < self.REFRESH_SECONDS:
            return
        self._shown = now
        rate = (tokens - self._start_tokens) / max(now - self._start, 1e-9)
        shown = f"{rate:,.0f} tok/s" + (f" MFU {self._flops * rate / self._peak:.1%}" if self._flops and self._peak else "")
        self._progress.update(self._task, completed=tokens, rate=shown,
                              loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")

    def on_eval(self, point: "EvalPoint") -> None:
        train = "-" if point.train_loss is None else f"{point.train_loss:.4f}"
        self._progress.update(self._task, completed=point.tokens, loss=train)
        self._progress.console.print(f"step {point.step:,}  tokens {point.tokens:,}  "
                                   f"val loss {point.val_loss:.4f}  train loss {train}")
