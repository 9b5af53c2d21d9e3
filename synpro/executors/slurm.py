"""Slurm through submitit: every stage that is not done is one job with the resources its kind asks for.

- The job runs `synpro.executors.job.StageJob`: the stage's own runner takes the lock, runs it (its
  ranks under torchrun when `processes > 1`) and writes the manifest; the sweep only waits and then
  loads the finished folder. Its sbatch script and logs are in `<stage folder>/.executor/slurm/`.
- The job id and its last seen state are in `.executor/job.json` (and every submission in
  `jobs.jsonl`) before the sweep waits, and the state the job ended in once the stage is done: a
  sweep started again re-attaches to a job that is pending, running or requeued instead of
  submitting another. A job that ended without finishing the stage (cancelled, failed, out of time
  and of requeues) fails the trial with its log; the next sweep submits a new job, which resumes
  from the stage's checkpoint.
- Pre-emption: Slurm signals SIGUSR2 `signal_delay_s` before the time limit; training checkpoints at
  once and submitit requeues the job (at most `max_requeues` times), which resumes bit for bit.
  SIGTERM (scancel, or a pre-emption that Slurm requeues itself) also checkpoints, then stops.
- The workdir must be on a filesystem every node sees, with working flock (the stage locks), and the
  store, Optuna and MLflow must be servers every node reaches (PostgreSQL, an MLflow server): only the
  sweep process talks to them, but `--workers N` sweeps may run on several login nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synpro.executors.executor import Executor
from synpro.executors.base import StageFailed, child_env, read_job, tail, write_job, write_payload

if TYPE_CHECKING:
    from synpro.stages.base import Stage
    from synpro.stages.runner import Runner

# Slurm job states a job leaves only by ending; anything else (PENDING, RUNNING, REQUEUED, COMPLETING,
# CONFIGURING, SUSPENDED, UNKNOWN while accounting has not seen it yet) is still on its way.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}
# How long a sweep waits, once the stage is done, for accounting to say how its job ended: the job exits
# right after it writes the manifest, and job.json should not go on saying RUNNING.
END_GRACE_S = 15.0


def slurm_state(job: Any) -> str:
    """The job's state as accounting knows it now (submitit caches `job.state`; this asks again)."""
    try:
        state = str(job.get_info(mode="force").get("State") or "UNKNOWN")
    except Exception:  # noqa: BLE001 - sacct hiccups: ask again on the next poll
        return "UNKNOWN"
    return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"


class SlurmExecutor(Executor):
    name = "slurm"

    def remote(self, stage: "Stage") -> bool:
        return True

    def run_remote(self, runner: "Runner", stage: "Stage", callbacks: list) -> None:
        import submitit

        from synpro.stages.runner import is_done

        folder = runner.folder(stage)
        observed: dict = {}
        record = read_job(folder)
        job = None
        if record and record.get("executor") == self.name:
            old = submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"])
            state = slurm_state(old)
            if state not in ENDED:
                job = old
                record = {**record, "state": state, "attached": time.time()}
                write_job(folder, record)
        if job is None:
            job, record = self._submit(runner, stage, folder)
        while True:
            stage.observe(folder, callbacks, observed)
            if is_done(stage, runner.root):
                return self._record_end(job, record, folder)
            state = slurm_state(job)
            if state != record.get("state"):
                record = {**record, "state": state, "seen": time.time()}
                write_job(folder, record)
            if state in ENDED:
                if is_done(stage, runner.root):
                    return self._record_end(job, record, folder)
                log = Path(str(job.paths.stdout))
                raise StageFailed(f"{stage!r}: Slurm job {job.job_id} ended {state} without finishing the stage "
                                  f"(run the sweep again to resume it); log: {log}\n{tail(log)}")
            time.sleep(self.poll_seconds)

    def _record_end(self, job: Any, record: dict, folder: Path) -> None:
        """The stage is done: record the state its job ended in, waiting at most END_GRACE_S for it."""
        deadline = time.monotonic() + END_GRACE_S
        state = record.get("state")
        while state not in ENDED:
            state = slurm_state(job)
            if state in ENDED or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_seconds)
        write_job(folder, {**record, "state": state, "stage_done": True, "ended": time.time()})

    def _submit(self, runner: "Runner", stage: "Stage", folder: Path) -> tuple[Any, dict]:
        import submitit

        from synpro.executors.job import StageJob

        resources = self.resources(stage)
        jobs = write_payload(folder, runner.root, stage, resources)
        options = self.spec.executor if self.spec is not None else None
        executor = submitit.SlurmExecutor(folder=jobs / "slurm",
                                          max_num_timeout=options.max_requeues if options else 3)
        pythonpath = child_env()["PYTHONPATH"]
        params: dict[str, Any] = {
            "job_name": f"synpro-{stage.kind}-{stage.key[:8]}",
            "time": resources.time_min, "nodes": resources.nodes, "ntasks_per_node": 1,
            "cpus_per_task": (resources.cpus or 1) * resources.processes,
            "gpus_per_node": resources.gpus or None,
            "mem": f"{int(resources.mem_gb * 1024)}MB" if resources.mem_gb else None,
            "stderr_to_stdout": True,
            # The job imports the code this sweep runs (an editable install, a PYTHONPATH checkout).
            "setup": [f"export PYTHONPATH={_quote(pythonpath)}", "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}",
                      *(options.setup if options else [])],
        }
        if options is not None:
            params.update(partition=options.partition, account=options.account, qos=options.qos,
                          constraint=options.constraint, signal_delay_s=options.signal_delay_s,
                          additional_parameters=dict(options.sbatch) or None)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        job = executor.submit(StageJob(jobs))
        record = {"executor": self.name, "job_id": str(job.job_id), "folder": str(jobs / "slurm"),
                  "state": "SUBMITTED", "submitted": time.time(), "resources": resources.shown(),
                  "log": str(job.paths.stdout)}
        write_job(folder, record, new=True)
        return job, record


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
