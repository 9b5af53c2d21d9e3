"""A stage's ranks under torchrun: `resources.<kind>.processes > 1` on one node.

The process holding the stage's lock (the sweep itself, a stage subprocess or a Slurm job) starts
`python -m torch.distributed.run --standalone --nproc-per-node N -m synpro.executors.torchrun DIR`
and waits. Every rank loads the stage and its finished inputs from DIR and calls `stage.run` (the
trainer splits each batch over the ranks; gloo on CPU, NCCL with one GPU per rank: `LOCAL_RANK`
picks it among those CUDA_VISIBLE_DEVICES shows); rank 0 writes the files, the checkpoints and the
metrics, and the lock holder writes the manifest once torchrun ends well. A rank that dies takes
the group down (torchrun restarts nothing: `--max-restarts 0`) and the stage fails; running it again
resumes from its last checkpoint. On a pre-emption signal every rank checkpoints at the same step,
rank 0 leaves `ranks/preempted`, and the lock holder raises `Preempted`.

While it waits, the lock holder feeds the stage's observers (the curve streamed to the store and
MLflow) from the stage folder (`Stage.observe`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synpro.core import preempt
from synpro.core.fs import write_atomic
from synpro.executors.base import child_env, load_done, read_payload, tail, wait_process, write_payload

if TYPE_CHECKING:
    from synpro.executors.base import Resources
    from synpro.stages.base import Stage, StageContext

RANKS = "ranks"
METRICS = "metrics.json"
PREEMPTED = "preempted"


def run_ranks(stage: "Stage", ctx: "StageContext", root: Path, resources: "Resources", *,
              poll_seconds: float = 1.0) -> dict[str, Any]:
    jobs = write_payload(ctx.folder, root, stage, resources)
    ranks = jobs / RANKS
    ranks.mkdir(exist_ok=True)
    for stale in (METRICS, PREEMPTED):
        (ranks / stale).unlink(missing_ok=True)
    log = ranks / "torchrun.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={resources.processes}",
           "--max-restarts=0", f"--log-dir={ranks / 'logs'}", "--redirects=3", "-m", "synpro.executors.torchrun",
           str(jobs)]
    env = child_env()
    if resources.cpus:
        env["OMP_NUM_THREADS"] = str(resources.cpus)

    def forward(signum: int, frame: Any) -> None:  # pre-emption reaches the ranks, never the agent
        preempt._handler(signum, frame)
        for pid_file in ranks.glob("rank-*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signum)
            except (OSError, ValueError):
                pass

    observed: dict[str, Any] = {}
    with open(log, "a") as out:
        # The agent ignores SIGUSR2 (by default it would die of it); ranks install their own handlers.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        with _forwarding(forward):
            code = wait_process(proc, poll_seconds=poll_seconds,
                                on_poll=lambda: stage.observe(ctx.folder, ctx.callbacks, observed))
    stage.observe(ctx.folder, ctx.callbacks, observed)
    if (ranks / PREEMPTED).exists():
        raise preempt.Preempted(f"{stage!r}: its ranks checkpointed and stopped on a pre-emption signal")
    if code != 0 or not (ranks / METRICS).exists():
        logs = sorted((ranks / "logs").rglob("stderr.log")) or sorted((ranks / "logs").rglob("*.log"))
        shown = "\n".join(f"--- {p}\n{tail(p, 8)}" for p in logs[-2:])
        raise RuntimeError(f"{stage!r}: torchrun with {resources.processes} ranks exited {code}; "
                           f"its log: {log}\n{tail(log, 6)}\n{shown}")
    return json.loads((ranks / METRICS).read_text())


class _forwarding:
    """Forward SIGTERM/SIGUSR2 to the ranks while they run (main thread only)."""

    def __init__(self, handler: Any):
        self.handler, self.previous = handler, {}

    def __enter__(self) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handler) for s in preempt.SIGNALS}

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def rank_main(jobs: Path) -> int:
    """One rank: run the stage; rank 0 reports its metrics (or that it was pre-empted)."""
    from synpro.stages.base import StageContext

    rank = int(os.environ.get("RANK", "0"))
    ranks = jobs / RANKS
    write_atomic(ranks / f"rank-{rank}.pid", str(os.getpid()))
    payload = read_payload(jobs)
    stage, root = payload["stage"], Path(payload["root"])
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    inputs = {name: load_done(up, root) for name, up in stage.inputs.items()}
    try:
        metrics = stage.run(StageContext(root / stage.dirname, inputs, progress=False, callbacks=[]))
    except preempt.Preempted:
        if rank == 0:
            write_atomic(ranks / PREEMPTED, "")
        return preempt.PREEMPTED_EXIT
    if rank == 0:
        write_atomic(ranks / METRICS, json.dumps(metrics or {}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(rank_main(Path(sys.argv[1])))
