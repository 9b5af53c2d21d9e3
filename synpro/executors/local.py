"""Local executors: inline (the stage runs in the sweep process) and subprocess (a fresh Python per stage).

A subprocess stage returns all of its memory (GPU memory above all) when it ends, which an inline
one never does: pretraining, the probe, GRPO and vLLM would otherwise share one process's CUDA
caches. Its output goes to `.executor/stage.log` in the stage folder. The job is recorded (pid and
its start time) before the sweep waits, so a restarted sweep whose predecessor's stage process still
runs waits for that process instead of starting another (it could not take the lock anyway).

GPUs: a stage asking for `gpus: N` gets N of the GPUs this process may use (CUDA_VISIBLE_DEVICES,
else every GPU `nvidia-smi -L` lists), given back when it ends; its ranks see only those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from synpro.executors.executor import Executor
from synpro.executors.base import (StageFailed, child_env, host_record, process_alive, read_job, tail,
                                   wait_process, write_job, write_payload)

if TYPE_CHECKING:
    from synpro.stages.base import Stage
    from synpro.stages.runner import Runner


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, by the ids CUDA_VISIBLE_DEVICES would take."""
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    if shown is not None:
        return [g for g in shown.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def split_gpus(gpus: list[str], workers: int) -> list[list[str]]:
    """Each of `workers` processes its own share of the GPUs (the first ones get the remainder); with
    fewer GPUs than workers, GPU i % n."""
    if not gpus:
        return [[] for _ in range(workers)]
    if workers > len(gpus):
        return [[gpus[i % len(gpus)]] for i in range(workers)]
    share, extra = divmod(len(gpus), workers)
    out, start = [], 0
    for i in range(workers):
        n = share + (i < extra)
        out.append(gpus[start:start + n])
        start += n
    return out


class GpuPool:
    """Hands out GPU ids to stages running at once; a stage that asks for more than exist is refused."""

    def __init__(self, gpus: list[str]):
        self.free = list(gpus)
        self.total = len(gpus)
        self.cond = threading.Condition()

    def take(self, n: int, what: str) -> list[str]:
        if n > self.total:
            raise StageFailed(f"{what} asks for {n} GPU(s); this machine shows {self.total} "
                              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        with self.cond:
            self.cond.wait_for(lambda: len(self.free) >= n)
            taken, self.free = self.free[:n], self.free[n:]
            return taken

    def give(self, gpus: list[str]) -> None:
        with self.cond:
            self.free.extend(gpus)
            self.cond.notify_all()


class InlineExecutor(Executor):
    name = "inline"


class SubprocessExecutor(Executor):
    name = "subprocess"

    def __init__(self, spec=None, **kw):
        super().__init__(spec, **kw)
        self.gpus = GpuPool(visible_gpus())

    def remote(self, stage: "Stage") -> bool:
        return True

    def run_remote(self, runner: "Runner", stage: "Stage", callbacks: list) -> None:
        folder = runner.folder(stage)
        observed: dict = {}
        poll = lambda: stage.observe(folder, callbacks, observed)  # noqa: E731
        record = read_job(folder)
        if record and record.get("executor") == self.name and record.get("state") == "RUNNING" \
                and process_alive(record["pid"], record.get("pid_start")):
            self._attach(folder, record, poll)
        from synpro.stages.runner import is_done

        if not is_done(stage, runner.root):  # an attached process that ended unfinished gets one more try here
            self._start(runner, stage, folder, poll)
        poll()

    def _start(self, runner: "Runner", stage: "Stage", folder: Path, poll) -> None:
        resources = self.resources(stage)
        jobs = write_payload(folder, runner.root, stage, resources)
        gpus = self.gpus.take(resources.gpus, repr(stage)) if resources.gpus else []
        env = child_env({"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else None)
        log = jobs / "stage.log"
        try:
            with open(log, "a") as out:
                out.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {stage!r} in a subprocess"
                          f"{' on GPUs ' + ','.join(gpus) if gpus else ''}\n")
                out.flush()
                proc = subprocess.Popen([sys.executable, "-m", "synpro.executors.job", str(jobs)], env=env,
                                        stdout=out, stderr=subprocess.STDOUT)
                record = {"executor": self.name, **host_record(proc.pid), "state": "RUNNING", "gpus": gpus,
                          "log": str(log)}
                write_job(folder, record, new=True)
                code = wait_process(proc, poll_seconds=self.poll_seconds, on_poll=poll)
        finally:
            if gpus:
                self.gpus.give(gpus)
        write_job(folder, {**record, "state": "COMPLETED" if code == 0 else "FAILED", "exit_code": code,
                           "ended": time.time()})
        if code != 0:
            from synpro.core.preempt import PREEMPTED_EXIT

            how = "was pre-empted (it checkpointed; run again to resume)" if code == PREEMPTED_EXIT else f"exited {code}"
            raise StageFailed(f"{stage!r} {how} in its subprocess; log: {log}\n{tail(log)}")

    def _attach(self, folder: Path, record: dict, poll) -> None:
        """Wait for a stage process an earlier sweep started (not our child: watch its pid)."""
        while process_alive(record["pid"], record.get("pid_start")):
            poll()
            time.sleep(self.poll_seconds)
