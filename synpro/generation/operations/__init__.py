"""Operation registry; importing this package registers every built-in operation."""

from synpro.generation.operations import reformat, rephrase  # noqa: F401  (registration)
from synpro.generation.operations.base import OPERATIONS, Operation

__all__ = ["OPERATIONS", "Operation"]
