"""`executor: slurm` against a real Slurm cluster (`.ci/slurm.sh` starts a one-node one as root): every
stage a job, the same store as the local executor, a restarted sweep re-attaches to its running job,
and a job cancelled with scancel mid-training is finished (resumed) by the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synpro.executors import job_history, read_job
from synpro.stages import read_manifest
import warm_cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SPEC = """\
experiment: {{name: tiny, seed: 1}}
tokenizer: {{vocab_size: 300}}
model: {{preset: tiny}}
budget: {{unique_tokens: 2000, total_tokens: {total}, validation_tokens: 1000}}
training: {{lr: 3.0e-3, warmup_tokens: 1000, batch_size: 8, seq_len: 32, eval_interval_tokens: 2048}}
arms: [{{kind: repetition}}]
tracking: {{enabled: false}}
executor: {{kind: {kind}, poll_seconds: 0.5}}
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, 1, "", str(exc))


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    state = _cli("sinfo", "-h", "-o", "%T")
    if state.returncode != 0 or not state.stdout.split():
        pytest.skip(f"no Slurm cluster answers sinfo ({(state.stderr or 'no output').strip()[:120]}); "
                    "as root, .ci/slurm.sh starts a one-node one")
    if not any(s.startswith(("idle", "mix", "alloc")) for s in state.stdout.split()):
        pytest.skip(f"the Slurm node is {state.stdout.split()}, not idle")
    accounting = _cli("sacct", "-n", "-X", "-o", "JobID")
    if accounting.returncode != 0:
        pytest.skip(f"Slurm has no accounting (sacct: {accounting.stderr.strip()[:120]}); submitit reads job "
                    "states from it")


def _spec(folder: Path, kind: str, total: int = 6000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(SPEC.format(kind=kind, total=total))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def sweep(spec: Path, workdir: Path) -> subprocess.CompletedProcess:
    return warm_cli.run([sys.executable, "-m", "cli", "sweep", str(spec), "--workdir", str(workdir), "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=spec.parent)


def start(spec: Path, workdir: Path) -> subprocess.Popen:
    return warm_cli.Popen([sys.executable, "-m", "cli", "sweep", str(spec), "--workdir", str(workdir),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), cwd=spec.parent)


def results(workdir: Path) -> dict:
    out = warm_cli.run([sys.executable, "-m", "cli", "results", "--workdir", str(workdir), "--format", "json"],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    (trial,) = json.loads(out.stdout)
    return {name: {k: arm[k] for k in ("final_val_loss", "tokens_seen", "unique_tokens", "effective_tokens",
                                       "n_seeds")} for name, arm in trial["arms"].items()}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_slurm_sweep_runs_every_stage_as_a_job_and_stores_what_the_local_one_does(tmp_path):
    local = sweep(_spec(tmp_path / "local", "local"), tmp_path / "local" / "wd")
    assert local.returncode == 0, local.stderr
    slurm = sweep(_spec(tmp_path / "slurm", "slurm"), tmp_path / "slurm" / "wd")
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    stages = sorted(p for p in (tmp_path / "slurm" / "wd" / "stages").glob("*-*") if p.is_dir())
    assert {s.name.split("-")[0] for s in stages} == {"pools", "pretrain"}
    for folder in stages:
        job = read_job(folder)
        assert job["executor"] == "slurm" and job["job_id"].isdigit() and job["stage_done"], folder
        assert job["state"] == "COMPLETED", job  # how it ended, not the last state seen while it ran
        assert Path(job["log"]).is_file() and read_manifest(folder)["pid"] != os.getpid()
    assert results(tmp_path / "slurm" / "wd") == results(tmp_path / "local" / "wd")


def test_a_restarted_sweep_reattaches_and_a_cancelled_job_is_finished_by_the_next_run(tmp_path):
    # Long enough that the job still trains while a second sweep starts (~800 steps of a tiny model).
    spec, workdir = _spec(tmp_path, "slurm", total=200_000), tmp_path / "wd"

    def pretrain() -> Path | None:
        found = [p for p in (workdir / "stages").glob("pretrain-*") if p.is_dir()]
        return found[0] if found else None

    first = start(spec, workdir)
    try:
        wait_for(lambda: pretrain() is not None and (pretrain() / "checkpoints" / "LATEST").is_file(), 300,
                 "the first checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)  # the sweep dies; its job does not
        first.wait()
    folder = pretrain()
    job_id = read_job(folder)["job_id"]
    second = start(spec, workdir)
    wait_for(lambda: "attached" in (read_job(folder) or {}), 120, "the restarted sweep to re-attach")
    assert [j["job_id"] for j in job_history(folder)] == [job_id]  # nothing submitted twice
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    out, _ = second.communicate(timeout=300)
    assert second.returncode != 0 and f"Slurm job {job_id} ended CANCELLED" in out, out
    assert read_manifest(folder) is None

    third = sweep(spec, workdir)
    assert third.returncode == 0, third.stdout + third.stderr
    history = job_history(folder)
    assert len(history) == 2 and history[0]["job_id"] == job_id != history[1]["job_id"]
    assert read_manifest(folder)["metrics"]["resumed_at_tokens"] > 0  # resumed, not started over
