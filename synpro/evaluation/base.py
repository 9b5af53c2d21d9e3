"""Builtin evaluation tasks: a name → builder registry, so a new offline task is one small module.

A builder writes an lm-eval task (YAML + data) from held-out texts:
`builder(texts, out_dir, n_items, seed, *, choices, context_chars, continuation_chars, exclude)`
returning a `BuiltTask`. Task names outside this registry are looked up in lm-eval's own index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from synpro.registry import Registry


@dataclass(frozen=True)
class BuiltTask:
    """What a builder wrote and how many items it could make."""

    name: str
    yaml_path: Path
    data_path: Path
    n_items: int
    n_docs: int  # held-out documents that gave at least one item
    contaminated: int  # passages dropped for overlapping the excluded (pretraining) texts


BUILTIN_TASKS: Registry[Callable[..., BuiltTask]] = Registry("builtin evaluation task")
