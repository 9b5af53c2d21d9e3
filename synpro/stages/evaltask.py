"""`evaltask`: the offline builtin evaluation tasks, built once per data pools from held-out text.

Every arm of a trial (and every trial sharing the pools) is scored on the same items. The items
come from the validation pool only; passages sharing a 13-word run with the organic pool are
dropped (synpro.evaluation.cloze).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.spec import Spec


@STAGES.register("evaltask")
class EvalTaskStage(Stage):
    kind = "evaltask"
    version = 1

    def __init__(self, spec: "Spec", pools: Stage, names: list[str]):
        super().__init__({"tasks": sorted(names), "builtin": spec.eval.builtin.model_dump(mode="json"),
                          "seed": spec.experiment.seed}, {"pools": pools})

    def run(self, ctx: StageContext) -> dict:
        from synpro.evaluation import BUILTIN_TASKS, builtin_task_texts

        held_out, exclude = builtin_task_texts(ctx.inputs["pools"])
        built = {}
        for name in self.config["tasks"]:
            b = self.config["builtin"]
            task = BUILTIN_TASKS.get(name)(held_out, ctx.folder, b["items"], self.config["seed"],
                                           choices=b["choices"], context_chars=b["context_chars"],
                                           continuation_chars=b["continuation_chars"], exclude=exclude)
            built[name] = {"items": task.n_items, "docs": task.n_docs, "contaminated": task.contaminated}
        return built

    def load(self, folder, inputs):
        return folder
