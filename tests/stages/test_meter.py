"""A stage's measured usage: wall time x devices in its manifest, every attempt counted, never in its key."""

from __future__ import annotations

import time

import pytest

from synpro.executors.base import Resources
from synpro.stages import Runner, Stage, StageContext, read_manifest


class Flaky(Stage):
    """Sleeps, and fails its first `failures` attempts (an error the next run resumes after)."""

    kind = "flaky"

    def __init__(self, failures: int, pause: float):
        super().__init__({"pause": pause})
        self.failures, self.pause = failures, pause

    def run(self, ctx: StageContext) -> dict:
        time.sleep(self.pause)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("killed mid-way")
        (ctx.folder / "out.txt").write_text("done")
        return {}

    def load(self, folder, inputs):
        return (folder / "out.txt").read_text()


class Fixed:
    """An executor that runs the stage here with fixed resources (as a job process's own runner does)."""

    def __init__(self, resources: Resources):
        self.fixed = resources

    def resources(self, stage):
        return self.fixed

    def remote(self, stage):
        return False

    def launch(self, stage, ctx, root):
        return stage.run(ctx)


def test_usage_counts_every_attempt_in_the_unit_of_the_device(tmp_path):
    stage = Flaky(failures=1, pause=0.2)
    runner = Runner(tmp_path, progress=False, executor=Fixed(Resources(processes=2, cpus=3)))
    with pytest.raises(RuntimeError):
        runner.run(stage)
    assert read_manifest(tmp_path / stage.dirname) is None
    assert runner.run(stage) == "done"
    manifest = read_manifest(tmp_path / stage.dirname)
    usage = manifest["usage"]
    assert usage["attempts"] == 2 and usage["device"] == "cpu" and usage["devices"] == 6  # 2 processes x 3 cpus
    assert usage["seconds"] >= 0.4 and usage["seconds"] >= manifest["timings"]["seconds"] + 0.2
    assert usage["cpu_core_hours"] == usage["device_hours"] == pytest.approx(usage["seconds"] * 6 / 3600)
    assert usage["gpu_hours"] == 0
    assert ".usage.jsonl" not in manifest["outputs"]  # hidden: the attempts are no output of the stage
    assert Flaky(failures=0, pause=0.2).key == stage.key  # usage never enters a key


def test_a_stage_given_gpus_is_counted_in_gpu_hours(tmp_path):
    stage = Flaky(failures=0, pause=0.05)
    Runner(tmp_path, progress=False, executor=Fixed(Resources(gpus=4))).run(stage)
    usage = read_manifest(tmp_path / stage.dirname)["usage"]
    assert usage["device"] == "gpu" and usage["devices"] == 4 and usage["cpu_core_hours"] == 0
    assert usage["gpu_hours"] == pytest.approx(usage["seconds"] * 4 / 3600)


def test_a_stage_in_its_own_process_records_its_usage_there(tmp_path):
    from executor_stages import Numbers
    from synpro.executors.local import SubprocessExecutor

    stage = Numbers(2, pause=0.3)
    Runner(tmp_path, progress=False, executor=SubprocessExecutor(poll_seconds=0.05)).run(stage)
    manifest = read_manifest(tmp_path / stage.dirname)
    usage = manifest["usage"]  # written by the stage's process, which held the lock
    assert usage["device"] == "cpu" and usage["attempts"] == 1 and usage["seconds"] >= 0.3
    assert usage["cpu_core_hours"] == pytest.approx(usage["seconds"] * usage["devices"] / 3600)
