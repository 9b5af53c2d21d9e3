"""The GRPO run's observer: a metrics line per optimizer step and held-out evaluation at an interval."""

from __future__ import annotations

import time
from typing import Any, Callable

from transformers import TrainerCallback

from synpro.core.faults import kill_point


class MetricsLog(TrainerCallback):
    """`write`s each step's trl logs with the step's wall time (generation included, held-out evaluation not),
    and calls `evaluate(model, step)` every `every` steps before the last (the run evaluates the final model).
    With a `target` pass rate, the first evaluation reaching it stops training (`reached` keeps it, with
    samples, as the run's final evaluation). A saved checkpoint is the `grpo.checkpoint` kill point.
    `unparseable()` gives each reward's count of scores it could not compute so far, logged with every step."""

    def __init__(self, write: Callable[[dict], None], evaluate: Callable[..., Any], every: int, steps: int, *,
                 target: float | None = None, samples: int = 0,
                 unparseable: Callable[[], dict[str, int]] = dict):
        self.write, self.evaluate, self.every, self.steps = write, evaluate, every, steps
        self.unparseable = unparseable
        self.target, self.samples, self.reached = target, samples, None
        self.began = time.perf_counter()
        self.seconds = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.seconds = time.perf_counter() - self.began
        if self.every and state.global_step % self.every == 0 and state.global_step < self.steps:
            result = self.evaluate(model, state.global_step, samples=self.samples if self.target is not None else 0)
            if self.target is not None and result.pass_rate >= self.target:
                self.reached = result
                control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            counts = {f"unparseable/{name}": n for name, n in self.unparseable().items()}
            self.write({"kind": "train", "step": state.global_step, "seconds": self.seconds, **logs, **counts})

    def on_save(self, args, state, control, **kwargs):
        kill_point("grpo.checkpoint")


class GrpoProgress(TrainerCallback):
    """A rich bar over the optimizer steps: the weighted reward, KL and completion tokens per second
    (trl's own per-step dict print and tqdm bar are removed by the run)."""

    def __init__(self, label: str, steps: int, completions_per_step: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.completions = completions_per_step
        self.bar = Progress(TextColumn(f"[bold]grpo {label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeRemainingColumn())
        self.task = self.bar.add_task("grpo", total=steps, stats="")
        self.began = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar.update(self.task, completed=state.global_step)
        self.bar.start()

    def on_step_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        seconds = max(time.perf_counter() - self.began, 1e-9)
        tokens = self.completions * float(logs.get("completions/mean_length", 0.0))
        self.bar.update(self.task, completed=state.global_step,
                        stats=f"reward {float(logs.get('reward', 0.0)):.3f}  kl {float(logs.get('kl', 0.0)):.4f}  "
                              f"{tokens / seconds:,.0f} tok/s")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.stop()
