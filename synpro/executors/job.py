"""A stage's own process: `python -m synpro.executors.job DIR` (a subprocess) or a Slurm job (submitit).

It runs the stage with a runner of its own: the lock, the skip when done, the temp-debris clearing
and the manifest are the runner's, exactly as in the sweep process; its ranks run under torchrun
when the stage asks for more than one process. On a pre-emption signal a training stage checkpoints
and stops: under Slurm the job is then requeued through submitit (`checkpoint` hands submitit the
same call, which resumes from the stage's checkpoint), elsewhere it exits with PREEMPTED_EXIT.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from synpro.core import preempt


class StageJob:
    """The callable a job runs; submitit sees `checkpoint` and so requeues it on time-out or pre-emption."""

    def __init__(self, jobs: str | Path):
        self.jobs = str(jobs)

    def __call__(self) -> dict[str, Any]:
        from synpro.executors.base import read_payload
        from synpro.executors.executor import Executor
        from synpro.stages.runner import Runner, read_manifest

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        payload = read_payload(Path(self.jobs))
        stage, root = payload["stage"], Path(payload["root"])
        submitit_usr2 = signal.getsignal(signal.SIGUSR2)
        try:
            Runner(root, progress=False, executor=Executor(resources=payload["resources"])).run(stage)
        except preempt.Preempted:
            # Slurm's warning before the time limit: submitit's own handler calls `checkpoint`, requeues
            # the job and exits. SIGTERM (scancel, a pre-emption Slurm requeues itself): just stop.
            if preempt.requested() == signal.SIGUSR2 and "SLURM_JOB_ID" in os.environ and callable(submitit_usr2):
                submitit_usr2(signal.SIGUSR2, None)
            sys.exit(preempt.PREEMPTED_EXIT)
        manifest = read_manifest(root / stage.dirname) or {}
        return {"key": manifest.get("key"), "metrics": manifest.get("metrics", {})}

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(StageJob(self.jobs))


def main() -> int:
    StageJob(sys.argv[1])()
    return 0


if __name__ == "__main__":
    sys.exit(main())
