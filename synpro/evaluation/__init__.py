"""Downstream evaluation of checkpoints with EleutherAI's lm-eval, plus SynPro's offline builtin tasks.

Importing this package registers the builtin tasks; lm-eval and torch load only when a function
that needs them runs.
"""

from synpro.evaluation.base import BUILTIN_TASKS, BuiltTask
from synpro.evaluation import cloze  # noqa: F401  (registration)
from synpro.evaluation.harness import TaskScores, evaluate_checkpoint, evaluate_model
from synpro.evaluation.sources import builtin_task_texts
from synpro.evaluation.tasks import check_tasks

__all__ = ["BUILTIN_TASKS", "BuiltTask", "TaskScores", "builtin_task_texts", "check_tasks",
           "evaluate_checkpoint", "evaluate_model"]
