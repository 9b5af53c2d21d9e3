"""Arm registry; importing this package registers every built-in arm."""

from synpro.arms.base import ARMS, Arm
from synpro.arms import oracle, prompted, repetition, synpro  # noqa: F401  (registration)

__all__ = ["ARMS", "Arm"]
