"""`probe`: θ → θ′, a copy of a pretraining run's checkpoint fine-tuned on the reference task.

θ is the parent run's last checkpoint (where a SynPro round ended); θ′ lives in `theta_prime/`.
The key names the pretraining stage, the probe settings and the reference set (its spec, the
interpreter for the builtin set, the file's bytes for a JSONL file), so a new checkpoint or
reference gives a new probe and nothing else does. Influence of a text is then
I(y) = L(y; θ) − L(y; θ′) (synpro.influence).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec

THETA_PRIME = "theta_prime"
RESULT = "probe.json"


def reference_identity(spec: "Spec") -> dict:
    """What the reference set's content depends on, without reading it all."""
    from synpro.core.hashing import file_digest

    ref = spec.probe.reference
    identity = {"reference": ref.model_dump(mode="json")}
    if ref.source == "builtin":
        identity["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    elif ref.source == "jsonl":
        path = Path(ref.path).expanduser()
        path = Path(spec.source_file).parent / path if spec.source_file and not path.is_absolute() else path
        identity["file"] = file_digest(path) if path.is_file() else str(path)
    return identity


@STAGES.register("probe")
class ProbeStage(Stage):
    kind = "probe"
    version = 1

    def __init__(self, spec: "Spec", pretrain: Stage, pools: Stage, *, label: str = ""):
        super().__init__({"probe": spec.probe.model_dump(mode="json", exclude={"device"}),
                          **reference_identity(spec), "seed": spec.experiment.seed},
                         {"pretrain": pretrain, "pools": pools}, label=label)
        self.spec = spec

    def run(self, ctx: StageContext) -> dict:
        from synpro.influence.probe import run_probe
        from synpro.influence.reference import load_reference

        spec = self.spec
        pairs = load_reference(spec.probe.reference, base=Path(spec.source_file).parent if spec.source_file else None)
        theta = Path(ctx.inputs["pretrain"].last_checkpoint) / "model"
        result = run_probe(theta, ctx.inputs["pools"].tokenizer_dir, pairs, spec.probe, ctx.folder / THETA_PRIME,
                           seed=spec.experiment.seed)
        summary = {"theta": str(theta), "theta_prime": str(result.out_dir), "loss_before": result.loss_before,
                   "loss_after": result.loss_after, "examples": result.train_examples}
        (ctx.folder / RESULT).write_text(json.dumps(summary, indent=1))
        return summary

    def load(self, folder: Path, inputs) -> dict:
        return json.loads((Path(folder) / RESULT).read_text())
