"""`pools`: the tokenizer, the validation pool and the U organic tokens, cut from the corpus."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec


@STAGES.register("pools")
class PoolsStage(Stage):
    kind = "pools"
    version = 3  # pools drawn from one stream (held-out lanes), written as shards

    def __init__(self, spec: "Spec"):
        unique = spec.budget.resolve(spec.model)[0]
        # The builtin corpus is CPython's own docs: another Python version is another corpus.
        corpus_id = str(spec.corpus_path() or "") or f"builtin-py{sys.version_info.major}.{sys.version_info.minor}"
        super().__init__({"corpus": spec.corpus.content(), "corpus_id": corpus_id,
                          "tokenizer": spec.tokenizer.model_dump(mode="json"), "unique_tokens": unique,
                          "validation_tokens": spec.budget.validation_tokens, "seed": spec.experiment.seed})
        self.spec = spec

    def run(self, ctx: StageContext) -> dict:
        from synpro.data.prepare import build_pools, load_pools

        build_pools(self.spec, ctx.folder, progress=ctx.progress)
        return load_pools(ctx.folder).stats["pools"]

    def load(self, folder, inputs):
        from synpro.data.prepare import load_pools

        return load_pools(folder)
