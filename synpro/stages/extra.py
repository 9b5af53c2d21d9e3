"""`extra`: the oracle's further unique tokens, the documents of the stream after the pools (never organic)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec


@STAGES.register("extra")
class ExtraStage(Stage):
    kind = "extra"
    version = 2  # the stream's documents after the pools, written as shards

    def __init__(self, spec: "Spec", pools: Stage, n_tokens: int):
        super().__init__({"tokens": n_tokens}, {"pools": pools})
        self.spec = spec

    def run(self, ctx: StageContext) -> dict:
        from synpro.data.prepare import build_extra

        build_extra(self.spec, ctx.inputs["pools"], self.config["tokens"], ctx.folder, progress=ctx.progress)
        return {"tokens": self.config["tokens"]}

    def load(self, folder, inputs):
        from synpro.data.shards import TokenShard

        return TokenShard.open(folder / "extra")  # a pool of shards, read as one stream
