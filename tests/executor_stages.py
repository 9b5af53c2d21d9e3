"""Stages for the executor tests, importable by the stage processes those tests start."""

from __future__ import annotations

import os
import time

from synpro.stages import Stage, StageContext


class Numbers(Stage):
    """Writes n numbers after its inputs' sum; `fail` raises instead, `pause` sleeps first."""

    kind = "numbers"

    def __init__(self, n: int, inputs=None, *, pause: float = 0.0, fail: bool = False):
        super().__init__({"n": n}, inputs)
        self.pause, self.fail = pause, fail

    def run(self, ctx: StageContext) -> dict:
        with open(ctx.folder.parent / "runs.log", "a") as f:
            f.write(f"{self.key} {os.getpid()}\n")
        time.sleep(self.pause)
        if self.fail:
            raise ValueError(f"numbers stage {self.key} was asked to fail")
        upstream = sum(ctx.inputs.values())
        (ctx.folder / "numbers.txt").write_text(" ".join(str(upstream + i) for i in range(self.config["n"])))
        return {"pid": os.getpid()}

    def load(self, folder, inputs):
        return sum(int(x) for x in (folder / "numbers.txt").read_text().split())
