"""Oracle: T tokens of unique organic text — not data-bound; the curve effective tokens invert."""

from synpro.arms.base import ARMS, Arm


@ARMS.register("oracle")
class Oracle(Arm):
    is_reference = True

    def organic(self, data):
        return [data.organic, data.extra]
