"""Reward registry; importing this package registers every built-in reward (one module each).

A reward is a class whose instances are trl-shaped reward functions (see `synpro.rewards.base`).
`synpro.rewards.scoring` builds them from a spec and scores (source, output) pairs outside GRPO.
"""

from synpro.rewards import (faithfulness, format, influence, length, quality, similarity,  # noqa: F401
                            structure)
from synpro.rewards.base import REWARDS, Reward

__all__ = ["REWARDS", "Reward"]
