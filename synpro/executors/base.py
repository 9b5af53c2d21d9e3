"""What every executor shares: a stage's resources, its job folder, the job record, waiting for a process.

The job folder is `<stage folder>/.executor/` (a dot-folder: never one of the stage's outputs):

- `stage.pkl` the stage (and with it its inputs) as the job process reads it; `sys_path.json` the
  orchestrator's import path, so the job imports the same code;
- `job.json` the job in flight or last run (executor, pid or Slurm id, state, times): what a restarted
  sweep re-attaches to; `jobs.jsonl` every job ever started for the stage, one line each;
- `stage.log` (subprocess) or `slurm/` (submitit's logs) and, under torchrun, `ranks/`.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from synpro.core.fs import write_atomic

if TYPE_CHECKING:
    from synpro.spec import Spec
    from synpro.stages.base import Stage

JOB_DIR = ".executor"
JOB = "job.json"
HISTORY = "jobs.jsonl"
PAYLOAD = "stage.pkl"
SYS_PATH = "sys_path.json"


class StageFailed(RuntimeError):
    """A stage's job ended without its manifest: the message says how it ended and where its log is."""


@dataclass(frozen=True)
class Resources:
    processes: int = 1
    gpus: int = 0
    nodes: int = 1
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None

    @classmethod
    def of(cls, spec: "Spec | None", kind: str) -> "Resources":
        return cls(**spec.resources_for(kind)) if spec is not None else cls()

    def shown(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def job_dir(folder: Path) -> Path:
    return Path(folder) / JOB_DIR


def read_job(folder: Path) -> dict[str, Any] | None:
    path = job_dir(folder) / JOB
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_job(folder: Path, record: dict[str, Any], *, new: bool = False) -> None:
    """Record the job (atomically); a `new` one is also appended to the stage's job history."""
    jobs = job_dir(folder)
    jobs.mkdir(parents=True, exist_ok=True)
    write_atomic(jobs / JOB, json.dumps(record, indent=1))
    if new:
        with open(jobs / HISTORY, "a") as f:
            f.write(json.dumps(record) + "\n")


def job_history(folder: Path) -> list[dict[str, Any]]:
    path = job_dir(folder) / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def write_payload(folder: Path, root: Path, stage: "Stage", resources: Resources) -> Path:
    """What a job process needs to run the stage by itself; returns the job folder."""
    jobs = job_dir(folder)
    jobs.mkdir(parents=True, exist_ok=True)
    write_atomic(jobs / SYS_PATH, json.dumps([p for p in sys.path if p]))
    write_atomic(jobs / PAYLOAD, pickle.dumps({"root": str(root), "stage": stage, "resources": resources}))
    return jobs


def read_payload(jobs: Path) -> dict[str, Any]:
    """The payload, after putting the orchestrator's import path first (as multiprocessing's spawn does)."""
    for entry in reversed(json.loads((jobs / SYS_PATH).read_text())):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return pickle.loads((jobs / PAYLOAD).read_bytes())


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a stage process: the same import path, one thread per rank unless set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def load_done(stage: "Stage", root: Path) -> Any:
    """The output of a stage whose folder is finished, its inputs loaded first (no lock, no integrity
    check: the process that launched this one verified them)."""
    inputs = {name: load_done(up, root) for name, up in stage.inputs.items()}
    return stage.load(Path(root) / stage.dirname, inputs)


def process_alive(pid: int, started: str | None) -> bool:
    """Whether `pid` still runs and is the process recorded (its start time in /proc matches)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (started is None or fields[19] == started)


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_process(proc: subprocess.Popen, *, poll_seconds: float, on_poll: Callable[[], None] = lambda: None) -> int:
    """Wait for a child, calling `on_poll` between looks; on Ctrl-C (or any error) the child gets SIGTERM
    (a training stage checkpoints on it), then SIGKILL after 60 s."""
    try:
        while True:
            try:
                return proc.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                on_poll()
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def host_record(pid: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": pid, "pid_start": start_time(pid), "submitted": time.time()}
