"""Downstream evaluation of checkpoints with EleutherAI's lm-eval, plus SynPro's offline builtin tasks.

Importing this package registers the builtin tasks; lm-eval and torch load only when a function
that needs them runs.
"""

from synpro.evaluation.base import BUILTIN_TASKS, BuiltTask
from synpro.evaluation import cloze  # noqa: F401  (registration)

__all__ = ["BUILTIN_TASKS", "BuiltTask"]
