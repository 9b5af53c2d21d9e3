"""Repetition: the U organic tokens, repeated for as many epochs as the budget T allows."""

from synpro.arms.base import ARMS, Arm


@ARMS.register("repetition")
class Repetition(Arm):
    def build(self, graph):
        return graph.pretrain({}, label=self.name)
