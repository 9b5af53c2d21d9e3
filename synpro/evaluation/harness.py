"""Evaluate one checkpoint on the spec's tasks with EleutherAI's lm-eval (zero-shot multiple choice).

The checkpoint is an HF folder (`Olmo2ForCausalLM.save_pretrained`), the tokenizer the data
stage's folder. Both are loaded once (fp32 unless the spec's eval.precision says bf16; TF32 matmuls on CUDA)
and handed to lm-eval's `HFLM` as objects, so the
harness scores SynPro's own model with lm-eval's request building, batching and metrics.

Settings that change results are set here rather than left to lm-eval's defaults: zero shots and
the spec's metric per task (`tasks.task_configs`), no BOS token added (SynPro's documents start
mid-stream after an EOS; contexts are passages, never document starts), the model's own context
length as the truncation limit, no bootstrap (intervals are not reported).

It calls lm-eval's `evaluator.evaluate` on tasks loaded by its TaskManager rather than
`simple_evaluate`: the latter adds environment info to every result by running `pip list` and
friends in subprocesses (~0.5 s per call, a third of a tiny checkpoint's evaluation) and sets the
zero-shot and seed choices that the task configs here already pin.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from synpro.evaluation.tasks import load_tasks
from synpro.spec import EvalTaskSpec

@dataclass(frozen=True)
class TaskScores:
    """Accuracy per task (each under its spec metric), and their mean: the paper's average accuracy."""

    scores: dict[str, dict[str, float]]  # task → {metric: value}, e.g. {"piqa": {"acc_norm": 0.62}}
    items: dict[str, int]  # task → items scored
    seconds: float
    chance: dict[str, float | None] = field(default_factory=dict)  # task → expected accuracy of a guess

    @property
    def average(self) -> float:
        return sum(v for metrics in self.scores.values() for v in metrics.values()) / len(self.scores)

    def metrics(self) -> dict[str, float]:
        """Flat names for MLflow and the store: `acc/<task>` (whichever accuracy) and `acc/avg`."""
        flat = {f"acc/{task}": value for task, metrics in self.scores.items() for value in metrics.values()}
        return {**flat, "acc/avg": self.average}


def evaluate_checkpoint(model_dir: str | Path, tokenizer_dir: str | Path, tasks: Sequence[EvalTaskSpec],
                        task_dir: str | Path | None, *, batch_size: int, limit: int | None = None,
                        device: str = "auto", precision: str | None = None) -> TaskScores:
    """Score the checkpoint in model_dir on every task on `device` (auto: CUDA when present) in `precision`
    (None: fp32); task_dir holds the builtin tasks' files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synpro.core.devices import allow_tf32, dtype_of, pick_device

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    allow_tf32(device)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype_of(precision))
    model = model.to(pick_device(device)).eval()
    return evaluate_model(model, tokenizer, tasks, task_dir, batch_size=batch_size, limit=limit)


def evaluate_model(model, tokenizer, tasks: Sequence[EvalTaskSpec], task_dir: str | Path | None, *,
                   batch_size: int, limit: int | None = None) -> TaskScores:
    """`evaluate_checkpoint` for a model and tokenizer already in memory."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    with _quiet():
        task_dict = load_tasks(tasks, task_dir)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                  max_length=model.config.max_position_embeddings, add_bos_token=False)
        results = evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=0,
                           log_samples=False, cache_requests=False)
    scores = {t.name: {t.metric: float(results["results"][t.name][f"{t.metric},none"])} for t in tasks}
    items = {t.name: int(results["n-samples"][t.name]["effective"]) for t in tasks}
    loaded = task_dict.get("tasks", task_dict)  # lm-eval ≥ 0.4.9 nests tasks under "tasks"
    chance = {t.name: chance_level(loaded.get(t.name), items[t.name]) for t in tasks}
    return TaskScores(scores, items, time.perf_counter() - started, chance)


def chance_level(task, n_items: int) -> float | None:
    """The accuracy a guess expects on the items scored (the mean of 1/choices), so results can tell an
    accuracy from chance (`synpro.caveats`); None where the task's documents cannot be read."""
    try:
        docs = list(task.eval_docs)[:n_items]
        return sum(1 / len(task.doc_to_choice(doc)) for doc in docs) / len(docs) if docs else None
    except Exception:  # noqa: BLE001 - a task shaped unlike lm-eval's multiple choice: unknown, not fatal
        return None


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval logs configs and draws three progress bars per task on stderr, datasets one per split:
    keep SynPro's screen readable. What was held back is shown if the evaluation fails."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars_were_on = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        logger.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()
