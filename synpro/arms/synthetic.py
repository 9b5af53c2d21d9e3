"""Arms that add LLM-rewritten copies of the organic pool to it, under the same budget T."""

from pydantic import BaseModel, ConfigDict, Field

from synpro.arms.base import Arm


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operations: list[str] = Field(min_length=1)
    # The share of the training tokens drawn from the synthetic sets (split among them by token count),
    # the rest organic; None mixes every source by its token count.
    synthetic_share: float | None = Field(default=None, gt=0, lt=1)


class SyntheticArm(Arm):
    """Organic U plus one synthetic set per operation, mixed by token count (or `synthetic_share`)."""

    Options = SyntheticOptions

    def operations(self) -> list[str]:
        return list(self.options.operations)

    def build(self, graph):
        return graph.pretrain({op: graph.synthetic(op) for op in self.operations()}, label=self.name,
                              synthetic_share=self.options.synthetic_share)
