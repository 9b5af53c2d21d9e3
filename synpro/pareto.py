"""The Pareto front of a multi-objective search: the trials no other trial beats on every objective.

A point dominates another when it is at least as good on every objective and better on one
(better: larger when the objective is maximized, smaller when minimized). Ties are all kept.
"""

from __future__ import annotations

from typing import Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    better = [(x - y) if d == "maximize" else (y - x) for x, y, d in zip(a, b, directions)]
    return all(v >= 0 for v in better) and any(v > 0 for v in better)


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """For each point, whether no other point dominates it (quadratic: a study has few trials)."""
    return [not any(dominates(other, point, directions) for other in points) for point in points]
