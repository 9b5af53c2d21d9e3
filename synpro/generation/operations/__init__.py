"""Operation registry; importing this package registers every built-in operation."""

from synpro.generation.operations.base import Operation
from synpro.registry import Registry

OPERATIONS: Registry[Operation] = Registry("operation")

from synpro.generation.operations import reformat, rephrase  # noqa: E402,F401  (registration)
