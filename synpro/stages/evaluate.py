"""`evaluate`: downstream accuracy of every snapshot of a pretraining run, through lm-eval.

Keyed by the pretraining stage and the task set (names, metrics, builtin task build, item limit),
so a changed task list re-scores and nothing else does. Scores are appended one line per snapshot
(`scores.jsonl`), so a killed stage resumes at the next unscored snapshot. The likelihood batch
size changes speed, not scores, and stays out of the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from synpro.core.fs import write_atomic
from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec

SCORES = "scores.jsonl"


@STAGES.register("evaluate")
class EvaluateStage(Stage):
    kind = "evaluate"
    version = 1

    def __init__(self, spec: "Spec", pretrain: Stage | list[Stage], pools: Stage, tasks: Stage | None, *,
                 label: str = ""):
        # A SynPro arm trains in rounds: each round's run keeps its own snapshots; all are scored.
        rounds = pretrain if isinstance(pretrain, list) else [pretrain]
        inputs = {**{_round(i): stage for i, stage in enumerate(rounds)}, "pools": pools,
                  **({"tasks": tasks} if tasks is not None else {})}
        precision = {"precision": spec.eval.precision} if spec.eval.precision else {}  # unset: fp32, as keyed before
        super().__init__({"tasks": [t.model_dump(mode="json") for t in spec.eval.tasks],
                          "limit": spec.eval.limit, **precision}, inputs, label=label)
        self.spec = spec

    def run(self, ctx: StageContext) -> dict:
        from rich.progress import Progress

        from synpro.evaluation import evaluate_checkpoint

        pools = ctx.inputs["pools"]
        snapshots = {t: p for name, result in ctx.inputs.items() if name.startswith("pretrain")
                     for t, p in result.snapshots.items()}
        scored = _read(ctx.folder)
        write_atomic(ctx.folder / SCORES, "".join(json.dumps(r) + "\n" for r in scored))  # drop a torn line
        done = {row["tokens"] for row in scored}
        todo = {int(t): Path(p) for t, p in snapshots.items() if int(t) not in done}
        with Progress(disable=not ctx.progress) as bar:
            task = bar.add_task(f"evaluate {self.label}", total=len(todo))
            for tokens, model_dir in sorted(todo.items()):
                scores = evaluate_checkpoint(model_dir, pools.tokenizer_dir, self.spec.eval.tasks,
                                             ctx.inputs.get("tasks"), batch_size=self.spec.eval.batch_size,
                                             limit=self.config["limit"],
                                             device=self.spec.eval.device or self.spec.training.device,
                                             precision=self.spec.eval.precision)
                with open(ctx.folder / SCORES, "a") as f:
                    f.write(json.dumps({"tokens": tokens, "metrics": scores.metrics(), "items": scores.items,
                                        "chance": scores.chance,
                                        "seconds": scores.seconds}) + "\n")
                bar.advance(task)
        rows = _read(ctx.folder)
        return {"snapshots": len(rows), "seconds": sum(r["seconds"] for r in rows)}

    def load(self, folder: Path, inputs) -> list[dict]:
        return _read(folder)


def _round(i: int) -> str:
    return "pretrain" if i == 0 else f"pretrain{i}"


def _read(folder: Path) -> list[dict]:
    """Scored snapshots by tokens; a line torn by a kill is dropped (its snapshot is scored again)."""
    path = Path(folder) / SCORES
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[row["tokens"]] = row
    return [rows[t] for t in sorted(rows)]
