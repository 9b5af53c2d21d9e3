"""Reward registry; importing this package registers every built-in reward (one module each).

A reward is a class whose instances are trl-shaped reward functions (see `synpro.rewards.base`).
`synpro.rewards.scoring` builds them from a spec and scores (source, output) pairs outside GRPO.
"""

from synpro.registry import Registry
from synpro.rewards.base import Reward

REWARDS: Registry[type[Reward]] = Registry("reward")

from synpro.rewards import (faithfulness, format, influence, length, quality, similarity,  # noqa: E402,F401
                            structure)
