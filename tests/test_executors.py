"""Executors: the spec's `executor` and `resources` (typed, located errors, in no key), stages run in
their own process under the runner's lock and manifest, GPU shares, pre-emption checkpoints, and a
`synpro sweep` whose pretraining runs as two torchrun ranks (gloo) with the curve of one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from executor_stages import Numbers
from synpro.errors import InputError
from synpro.executors import job_history, read_job
from synpro.executors.base import StageFailed, host_record, write_job, write_payload
from synpro.executors.local import GpuPool, SubprocessExecutor, split_gpus
from synpro.plan import plan_trial
from synpro.resolve import resolve
from synpro.spec import parse_spec
from synpro.stages import Runner, read_manifest
import warm_cli

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
experiment: {{name: tiny, seed: 1}}
tokenizer: {{vocab_size: 300}}
model: {{preset: tiny}}
budget: {{unique_tokens: 2000, total_tokens: {total}, validation_tokens: 1000}}
training: {{lr: 3.0e-3, warmup_tokens: 1000, batch_size: 8, seq_len: 32, eval_interval_tokens: 1024}}
{arms}
tracking: {{enabled: false}}
{extra}"""


def _spec(tmp_path: Path, extra: str = "", total: int = 6000, arms: str = "[{kind: repetition}]") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC.format(extra=extra, total=total, arms=f"arms: {arms}"))
    return path


def synpro(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return warm_cli.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


# ---- the spec ----------------------------------------------------------------------------------

RESOURCES = """\
executor: {kind: slurm, partition: gpu, account: lab, setup: [module load cuda]}
resources:
  default: {cpus: 4, time_min: 60}
  pretrain: {processes: 2, gpus: 2, mem_gb: 32}
"""


def test_executor_and_resources_are_typed_round_trip_and_touch_no_key(tmp_path):
    from synpro.spec import load_spec

    plain = load_spec(_spec(tmp_path))
    spec = load_spec(_spec(tmp_path / "r", RESOURCES))
    assert spec.executor.kind == "slurm" and spec.executor.partition == "gpu"
    assert spec.resources_for("pretrain") == {"processes": 2, "gpus": 2, "nodes": 1, "cpus": 4, "mem_gb": 32,
                                              "time_min": 60}
    assert spec.resources_for("pools") == {"processes": 1, "gpus": 0, "nodes": 1, "cpus": 4, "mem_gb": None,
                                           "time_min": 60}
    again = parse_spec(spec.to_yaml())
    assert again.executor == spec.executor and again.resources == spec.resources
    assert spec.content_hash() == plain.content_hash()  # the trial's identity
    assert [s.key for s in plan_trial(spec).graph] == [s.key for s in plan_trial(plain).graph]
    timed = plain.with_params({"training.checkpoint_minutes": 5})
    assert [s.key for s in plan_trial(timed).graph] == [s.key for s in plan_trial(plain).graph]


def test_parallel_stages_and_activation_checkpointing_touch_no_key_but_fsdp_keys_pretraining(tmp_path):
    from synpro.spec import load_spec

    plain = load_spec(_spec(tmp_path))
    keys = lambda spec: {s.kind: s.key for s in plan_trial(spec).graph}  # noqa: E731
    same = plain.with_params({"executor.parallel": 2, "training.activation_checkpointing": True})
    assert keys(same) == keys(plain) and same.content_hash() == plain.content_hash()
    assert parse_spec(same.to_yaml()).executor.parallel == 2  # typed, back to YAML
    sharded = keys(plain.with_params({"training.parallelism": "fsdp"}))
    assert sharded["pools"] == keys(plain)["pools"] and sharded["pretrain"] != keys(plain)["pretrain"]


@pytest.mark.parametrize("extra, key, line, words", [
    ("resources:\n  pretrian: {processes: 2}\n", "resources.pretrian", 9, "unknown stage kind 'pretrian'"),
    ("resources:\n  probe: {processes: 2}\n", "resources.probe.processes", 9, "run in one process"),
    ("resources:\n  pretrain: {processes: 3}\n", "resources.pretrain.processes", 9, "does not split into 3"),
    ("resources:\n  pretrain:\n    processes: 2\n    gpus: 3\n", "resources.pretrain.gpus", 11, "split evenly"),
    ("executor: {kind: kubernetes}\n", "executor.kind", 8, "'local' or 'slurm'"),
])
def test_bad_resources_are_located(tmp_path, extra, key, line, words):
    from synpro.spec import load_spec

    with pytest.raises(InputError) as err:
        resolve(load_spec(_spec(tmp_path, extra)), machine=False)
    problem = next(p for p in err.value.problems if p.key == key)
    assert words in problem.message and problem.line == line, str(err.value)


def test_plan_json_shows_each_stages_executor_and_resources(tmp_path):
    spec = _spec(tmp_path, "resources:\n  default: {cpus: 1}\n  pretrain: {processes: 2}\n")
    out = synpro("plan", str(spec), "--workdir", str(tmp_path / "wd"), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["kind"]: r for r in json.loads(out.stdout)}
    assert rows["pretrain"]["executor"] == "inline+torchrun" and rows["pools"]["executor"] == "inline"
    assert rows["pretrain"]["resources"] == {"processes": 2, "gpus": 0, "nodes": 1, "cpus": 1}
    assert rows["pools"]["resources"]["processes"] == 1 and rows["pools"]["job"] is None
    slurm = synpro("plan", str(spec), "--workdir", str(tmp_path / "wd"), "--format", "json", "--executor", "slurm",
                   cwd=tmp_path)
    assert {r["kind"]: r["executor"] for r in json.loads(slurm.stdout)} == {"pools": "slurm",
                                                                            "pretrain": "slurm+torchrun"}
    bad = synpro("plan", str(spec), "--executor", "k8s", cwd=tmp_path)
    assert bad.returncode == 2 and "--executor 'k8s'" in bad.stderr


# ---- stages in their own process -----------------------------------------------------------------

def test_a_subprocess_stage_runs_under_the_same_lock_and_manifest(tmp_path):
    up = Numbers(3)
    down = Numbers(2, {"up": up})
    executor = SubprocessExecutor(poll_seconds=0.05)
    assert Runner(tmp_path, progress=False, executor=executor).run(down) == 3 * 2 + 1
    for stage in (up, down):
        folder = tmp_path / stage.dirname
        manifest = read_manifest(folder)
        assert manifest["pid"] != os.getpid() and manifest["metrics"]["pid"] == manifest["pid"]
        assert all(not name.startswith(".executor") for name in manifest["outputs"])  # logs are no output
        job = read_job(folder)
        assert job["executor"] == "subprocess" and job["state"] == "COMPLETED" and job["exit_code"] == 0
        assert (folder / ".executor" / "stage.log").is_file() and len(job_history(folder)) == 1
    assert Runner(tmp_path).run(down) == 7  # finished for every executor: an inline runner loads it
    assert len((tmp_path / "runs.log").read_text().splitlines()) == 2


def test_a_failing_subprocess_stage_reports_its_log_and_a_restart_reattaches(tmp_path):
    bad = Numbers(1, fail=True)
    with pytest.raises(StageFailed, match="was asked to fail"):
        Runner(tmp_path, executor=SubprocessExecutor(poll_seconds=0.05)).run(bad)
    assert read_job(tmp_path / bad.dirname)["state"] == "FAILED" and read_manifest(tmp_path / bad.dirname) is None

    # A stage process an earlier (killed) sweep started is waited for, not started again.
    slow = Numbers(4, pause=3)
    folder = tmp_path / slow.dirname
    folder.mkdir()
    jobs = write_payload(folder, tmp_path, slow, SubprocessExecutor().resources(slow))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "synpro.executors.job", str(jobs)], env=env)
    write_job(folder, {"executor": "subprocess", **host_record(proc.pid), "state": "RUNNING"}, new=True)
    assert Runner(tmp_path, executor=SubprocessExecutor(poll_seconds=0.05)).run(slow) == 6
    proc.wait()
    assert len(job_history(folder)) == 1 and read_manifest(folder)["pid"] == proc.pid


def test_gpus_are_shared_out_and_handed_back():
    assert split_gpus(["0", "1", "2", "3", "4"], 2) == [["0", "1", "2"], ["3", "4"]]
    assert split_gpus(["0", "1"], 3) == [["0"], ["1"], ["0"]] and split_gpus([], 2) == [[], []]
    pool = GpuPool(["0", "1", "2"])
    a = pool.take(2, "a")
    assert a == ["0", "1"] and pool.free == ["2"]
    pool.give(a)
    assert sorted(pool.free) == ["0", "1", "2"]
    with pytest.raises(StageFailed, match="asks for 4 GPU"):
        pool.take(4, "big")


# ---- pre-emption ----------------------------------------------------------------------------------

def _docs(n: int, seed: int, vocab: int = 64) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[3 + (int(rng.integers(3, vocab)) - 3 + i) % (vocab - 3) for i in range(int(rng.integers(20, 60)))] + [2]
            for _ in range(n)]


def test_a_preemption_signal_checkpoints_at_once_and_the_resumed_run_is_the_same(tmp_path):
    from synpro.core.preempt import Preempted, clear
    from synpro.data.shards import write_shard
    from synpro.models import ModelSpec, Vocab
    from synpro.spec import TrainingSpec
    from synpro.training import Callback, train

    organic = write_shard(tmp_path / "organic", _docs(120, 0), 64, name="organic")
    val = write_shard(tmp_path / "val", _docs(20, 1), 64, name="val")
    training = TrainingSpec(lr=1e-2, warmup_tokens=512, batch_size=8, micro_batch_size=4, seq_len=32,
                            eval_interval_tokens=2048)

    def run(out: Path, callbacks=()):
        return train(model=ModelSpec(preset="tiny"), training=training, vocab=Vocab(64, 1, 2, 0), sources=[organic],
                     total_tokens=4000, validation=val, out_dir=out, seed=0, progress=False, callbacks=callbacks)

    class Signal(Callback):  # what Slurm's warning (SIGUSR2) does at step 5, between evaluations
        def on_step(self, step, tokens, loss, lr):
            if step == 5:
                os.kill(os.getpid(), signal.SIGUSR2)

    reference = run(tmp_path / "reference")
    with pytest.raises(Preempted):
        run(tmp_path / "run", [Signal()])
    clear()
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text() == "step-000000005"
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers only while training
    resumed = run(tmp_path / "run")
    assert resumed.resumed_at_tokens == 5 * 256
    assert resumed.curve == reference.curve  # train losses too: the partial sum travelled


# ---- torchrun from `synpro sweep` ------------------------------------------------------------------

def _pretrain_folder(workdir: Path) -> Path:
    (folder,) = (workdir / "stages").glob("pretrain-*")
    return folder


def _curve(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "curve.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_two_rank_torchrun_sweep_has_the_curve_of_one_process_and_resumes_after_a_rank_is_killed(tmp_path):
    one = synpro("sweep", str(_spec(tmp_path / "one")), "--workdir", str(tmp_path / "one" / "wd"), "--no-progress",
                 cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    spec = _spec(tmp_path / "two", "resources: {pretrain: {processes: 2}}\n")
    workdir = tmp_path / "two" / "wd"
    # Rank 0 dies (SIGKILL) right after committing its second checkpoint; torchrun takes rank 1 down.
    killed = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path,
                    env={"SYNPRO_KILL_AT": "pretrain.checkpoint:2"})
    assert killed.returncode != 0 and "torchrun with 2 ranks exited" in killed.stderr + killed.stdout
    folder = _pretrain_folder(workdir)
    assert read_manifest(folder) is None and (folder / "checkpoints" / "LATEST").read_text() == "step-000000008"
    resumed = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    manifest = read_manifest(folder)
    assert folder.name == _pretrain_folder(tmp_path / "one" / "wd").name  # resources are in no key
    assert manifest["metrics"]["resumed_at_tokens"] == 2048
    assert sorted(p.name for p in (folder / ".executor" / "ranks").glob("rank-*.pid")) == ["rank-0.pid", "rank-1.pid"]
    two, ref = _curve(folder), _curve(_pretrain_folder(tmp_path / "one" / "wd"))
    assert [p["tokens"] for p in two] == [p["tokens"] for p in ref]
    assert [p["val_loss"] for p in two] == pytest.approx([p["val_loss"] for p in ref], abs=2e-4)
    assert [p["train_loss"] for p in two[1:]] == pytest.approx([p["train_loss"] for p in ref[1:]], abs=2e-4)


# ---- stages of one trial at once -------------------------------------------------------------------

def _arm_results(workdir: Path, cwd: Path) -> dict:
    shown = synpro("results", "--workdir", str(workdir), "--format", "json", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    (trial,) = json.loads(shown.stdout)
    return {name: {k: arm[k] for k in ("final_val_loss", "effective_tokens", "tokens_seen")}
            for name, arm in trial["arms"].items()}


@pytest.mark.slow
def test_two_arms_of_a_trial_train_at_once_with_two_workers_and_give_the_sequential_results(tmp_path):
    arms = "[{kind: repetition}, {kind: oracle}]"
    sequential = tmp_path / "seq" / "wd"
    done = synpro("sweep", str(_spec(tmp_path / "seq", arms=arms)), "--workdir", str(sequential), "--no-progress",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    parallel = tmp_path / "par" / "wd"
    done = synpro("sweep", str(_spec(tmp_path / "par", arms=arms)), "--workdir", str(parallel), "--no-progress",
                  "--parallel", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folders = sorted((parallel / "stages").glob("pretrain-*"))
    assert len(folders) == 2 and all(read_job(f)["executor"] == "subprocess" for f in folders)
    (a, b) = [read_manifest(f)["timings"] for f in folders]
    assert a["started"] < b["finished"] and b["started"] < a["finished"], (a, b)  # they overlap
    assert sorted(f.name for f in folders) == sorted(f.name for f in (sequential / "stages").glob("pretrain-*"))
    for folder in folders:
        assert _curve(folder) == _curve(sequential / "stages" / folder.name)
    assert _arm_results(parallel, tmp_path) == _arm_results(sequential, tmp_path)


def test_parallel_stages_in_the_sweep_process_are_refused(tmp_path):
    done = synpro("sweep", str(_spec(tmp_path)), "--workdir", str(tmp_path / "wd"), "--executor", "inline",
                  "--parallel", "2", cwd=tmp_path)
    assert done.returncode == 2 and "parallel" in done.stderr + done.stdout
