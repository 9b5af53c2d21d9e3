"""`synthesize`: one operation's rewrite of the organic pool, keyed by its config and the pools' key.

Generation appends records as it goes, so a killed stage resumes after its last finished batch.
A finished set with too little usable output is still a finished stage: the orchestrator refuses
to train on it (bad input), and a re-run reuses the set instead of generating it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec


@STAGES.register("synthesize")
class SynthesizeStage(Stage):
    kind = "synthesize"
    version = 1

    def __init__(self, spec: "Spec", op_name: str, pools: Stage, generator: Stage | None = None):
        from synpro.generation.synthetic import set_config

        # The operation's name is a label: two names for one configuration share one set. A trained
        # generator (a `grpo` stage) is named by its key; its folder replaces the spec's model.
        inputs = {"pools": pools, **({"generator": generator} if generator is not None else {})}
        super().__init__(set_config(spec, op_name, generator.key if generator is not None else None), inputs,
                         label=op_name)
        self.spec, self.op_name = spec, op_name

    def run(self, ctx: StageContext) -> dict:
        from synpro.generation.synthetic import make_set

        spec = self.spec
        if "generator" in ctx.inputs:
            spec = spec.with_params({"generation.generator.model": str(Path(ctx.inputs["generator"]).resolve())})
        made = make_set(spec, self.op_name, ctx.inputs["pools"], ctx.folder, self.config,
                        progress=ctx.progress)
        return {**made.metrics, "passed": made.stats["passed"], "windows": made.stats["windows"],
                "resumed_at_window": made.stats["resumed_at_window"]}

    def load(self, folder, inputs):
        from synpro.generation.synthetic import load_set

        return load_set(folder)
