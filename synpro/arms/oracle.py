"""Oracle: T tokens of unique organic text — not data-bound; the curve effective tokens invert."""

from synpro.arms.base import ARMS, Arm


@ARMS.register("oracle")
class Oracle(Arm):
    is_reference = True

    def build(self, graph):
        return graph.pretrain({"extra": graph.extra()}, label=self.name)
