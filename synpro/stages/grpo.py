"""`grpo`: one operation's generator trained with GRPO on prompts from the organic pool (synpro.grpo).

Keyed by the grpo settings as they take effect, the operation (prompts, heading, pre-fill, filters), the
rewards with their weights and settings, the base model's weights, how prompts are cut, the seed, and the
inputs: `pools` (the prompts), `probe` when the influence reward is weighted (its output is the
InfluenceSource of θ and θ′), and `previous` (the previous round's grpo stage) when grpo.init is
"previous". Speed-only knobs (micro batch, checkpoint and evaluation intervals, generation backend) stay out
of the key. The output is the trained generator's HF folder; a killed stage resumes from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synpro.errors import InputError
from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec


@STAGES.register("grpo")
class GrpoStage(Stage):
    kind = "grpo"
    version = 1

    def __init__(self, spec: "Spec", op_name: str, pools: Stage, *, probe: Stage | None = None,
                 previous: Stage | None = None, label: str = ""):
        from synpro.grpo.trainer import stage_config
        from synpro.rewards.scoring import weights_for

        if "influence" in weights_for(spec, op_name) and probe is None:
            raise InputError.one(f"the influence reward of {op_name!r} needs a probe (θ and θ′) to train with",
                                 file=spec.source_file, key=f"rewards.weights.{op_name}.influence",
                                 hint="give the grpo stage a probe input, or leave influence out of the weights")
        if previous is not None and spec.grpo.init != "previous":
            raise ValueError("a previous generator is an input only when grpo.init is 'previous'")
        inputs = {"pools": pools, **({"probe": probe} if probe else {}), **({"previous": previous} if previous else {})}
        super().__init__(stage_config(spec, op_name), inputs, label=label or op_name)
        self.spec, self.op_name = spec, op_name

    def run(self, ctx: StageContext) -> dict:
        from synpro.grpo.trainer import train_generator

        from synpro.influence.service import source_for

        pools = ctx.inputs["pools"]
        previous = ctx.inputs.get("previous")
        probe = ctx.inputs.get("probe")  # the probe stage's θ and θ′ folders
        influence = source_for(self.spec, Path(probe["theta"]), Path(probe["theta_prime"]),
                               Path(pools.tokenizer_dir)) if probe else None
        return train_generator(self.spec, self.op_name, Path(pools.organic_docs), Path(pools.tokenizer_dir),
                               ctx.folder, init_folder=previous, influence=influence, progress=ctx.progress)

    def load(self, folder: Path, inputs) -> Path:
        """The trained generator: an HF model folder."""
        from synpro.grpo.trainer import GENERATOR

        return Path(folder) / GENERATOR
