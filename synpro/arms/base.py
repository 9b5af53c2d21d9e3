"""What an arm is: a named recipe for which tokens the model sees under the shared budget T."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from synpro.registry import Registry

if TYPE_CHECKING:
    from synpro.data.prepare import PreparedData
    from synpro.data.shards import TokenShard


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm:
    """Subclass, set `Options`, implement `organic`, and register with `@ARMS.register("kind")`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    # The reference arm whose learning curve defines effective tokens (see synpro.effective).
    is_reference: ClassVar[bool] = False

    def __init__(self, name: str, options: BaseModel):
        self.name = name
        self.options = options

    def organic(self, data: "PreparedData") -> list["TokenShard"]:
        """The organic (unique, human) tokens this arm may draw on."""
        raise NotImplementedError

    def operations(self) -> list[str]:
        """Names of the synthetic sets (spec `generation.operations`) this arm trains on."""
        return []

    def sources(self, data: "PreparedData", synthetic: dict[str, "TokenShard"]) -> list["TokenShard"]:
        """Token shards to mix, in proportion to their sizes, until the total budget is seen."""
        return self.organic(data) + [synthetic[op] for op in self.operations()]


ARMS: Registry[type[Arm]] = Registry("arm")
