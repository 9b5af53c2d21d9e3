"""Fault injection through the real CLI: real processes killed with SIGKILL at named moments, real
SQLite and PostgreSQL, real MLflow. After any kill and one re-run the study must equal an
uninterrupted run: every point once, every arm finished, the same values, nothing left RUNNING."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from test_sweep import LONGER, SMALLER, results_json, synpro, wait_for
from test_sweep import write_spec as sweep_spec
import warm_cli

TWO, FOUR = (1.0e-2, 3.0e-3), (1.0e-2, 3.0e-3, 1.0e-3, 3.0e-4)
PASSWORD = "pw-Zq81x"  # trust auth ignores it; it must still appear nowhere


def write_spec(folder: Path, lrs) -> Path:
    return sweep_spec(folder, lrs, SMALLER)


def sweep_cmd(spec: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli", "sweep", str(spec), "--workdir", str(workdir), "--no-progress", *extra]


def run_killed(spec: Path, workdir: Path, kill_at: str) -> str:
    """Run a sweep that SIGKILLs itself at the named kill point (synpro.core.faults); what it printed."""
    proc = warm_cli.run(sweep_cmd(spec, workdir), cwd=spec.parent, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SYNPRO_KILL_AT": kill_at})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    return proc.stdout


def kill_when(spec: Path, workdir: Path, moment) -> str:
    """Start a sweep and SIGKILL it once `moment(workdir)` holds (polled on its folders); what it printed."""
    proc = warm_cli.Popen(sweep_cmd(spec, workdir), cwd=spec.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: moment(workdir), 300, proc)
    proc.send_signal(signal.SIGKILL)
    return proc.communicate()[0]


def outcome(results: list[dict]) -> dict[str, dict]:
    """What must equal an uninterrupted run: per point, each arm's state and values (not ids or numbers)."""
    keyed = {}
    for trial in results:
        key = json.dumps(trial["params"], sort_keys=True)
        assert key not in keyed, f"point {key} stored twice"
        keyed[key] = {"state": trial["state"], "objective_value": trial["objective_value"],
                      "arms": {name: _without_run_ids(arm) for name, arm in trial["arms"].items()}}
    return keyed


# What differs by how a run went, not by what it made: MLflow run ids (a re-run may supersede a killed run)
# and the measured cost (a SIGKILLed attempt's time is lost, and the re-run's wall time is its own).
RUN_SPECIFIC = {"mlflow_run_id", "gpu_hours", "cpu_core_hours", "usage_by_kind", "unmeasured_stages",
                "cost_per_m_effective_gained", "cost_unit"}


def _without_run_ids(values: dict) -> dict:
    """An arm's values without what is specific to one run (`RUN_SPECIFIC`), per seed too."""
    return {k: ({seed: _without_run_ids(v) for seed, v in value.items()} if k == "per_seed" else value)
            for k, value in values.items() if k not in RUN_SPECIFIC}


def optuna_trials(url: str) -> list:
    import optuna

    [name] = optuna.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def assert_settled(store_url: str, optuna_url: str, mlflow_url: str, points) -> None:
    """Nothing RUNNING anywhere; each point COMPLETE in Optuna exactly once."""
    from optuna.trial import TrialState

    engine = sa.create_engine(store_url.replace("postgresql+psycopg:", "postgresql+psycopg:"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from trials where state <> 'finished'")).scalar() == 0
        assert conn.execute(sa.text("select count(*) from arms where state <> 'finished'")).scalar() == 0
    engine.dispose()
    trials = optuna_trials(optuna_url)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = sorted(t.params["training.lr"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == sorted(points)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.data.tags, r.info.status) for r in runs]
    arm_runs = [r for r in runs if r.data.tags["synpro.level"] == "arm"]
    assert len(arm_runs) == 2 * len(points)  # reused by the re-run, never forked


def sqlite_urls(workdir: Path) -> tuple[str, str, str]:
    return tuple(f"sqlite:///{workdir / name}" for name in ("synpro.db", "optuna.db", "mlflow.db"))


def _data_started(workdir: Path) -> bool:
    """Tokenizing under the pools stage's lock (its manifest appears only once the work is done)."""
    return any(workdir.glob("stages/.pools-*.lock")) and not any(workdir.glob("stages/pools-*/_stage.json"))


def _training(workdir: Path) -> bool:
    return any(workdir.glob("stages/pretrain-*/checkpoints/LATEST"))


# Moments a sweep is killed at, in the order a sweep reaches them: each run resumes what the kill before
# it left and is killed at the next, so every moment's leftovers are resumed once. Polled moments are
# wherever the sweep happens to be when the folder appears; the others are named kill points.
MOMENTS = [("poll", _data_started), ("poll", _training),
           ("point", "store.arm_result:1"),  # between the arm-result writes
           ("point", "trial.stored:1"),  # the store says finished, Optuna not told
           ("point", "trial.told:1")]  # between trials


@pytest.mark.slow
def test_a_kill_at_each_moment_and_one_rerun_equal_an_uninterrupted_run(tmp_path):
    """Killed during data prep, then in training, between the arm-result writes, after the store but
    before Optuna was told, and between trials: the last re-run ends as an uninterrupted run, with the
    trial whose worker died failed, saying why, and run again."""
    reference = write_spec(tmp_path / "reference", TWO)
    done = warm_cli.run(sweep_cmd(reference, reference.parent / "wd"), cwd=reference.parent, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    spec, workdir = write_spec(tmp_path / "killed", TWO), tmp_path / "killed" / "wd"
    said = []
    for how, what in MOMENTS:
        said.append(kill_when(spec, workdir, what) if how == "poll" else run_killed(spec, workdir, what))
    rerun = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=spec.parent)
    assert rerun.returncode == 0, rerun.stderr
    assert "2/2 trials complete" in rerun.stdout
    assert outcome(results_json(workdir)) == outcome(results_json(reference.parent / "wd"))
    assert_settled(*sqlite_urls(workdir), TWO)
    # The runs after the kills inside a trial (in training, between the arm-result writes) found its
    # worker gone: that trial failed, saying why, and its point ran again.
    for after in (("poll", _training), ("point", "store.arm_result:1")):
        assert "failed: its worker" in said[MOMENTS.index(after) + 1]
    from optuna.trial import TrialState

    failed = [t for t in optuna_trials(sqlite_urls(workdir)[1]) if t.state == TrialState.FAIL]
    assert len(failed) == 2 and {t.params["training.lr"] for t in failed} <= set(TWO)
    assert all("is gone" in t.user_attrs["synpro.fail_reason"] for t in failed)


@pytest.mark.slow
def test_a_second_sweep_on_sqlite_is_refused_at_start(tmp_path):
    spec, workdir = sweep_spec(tmp_path, TWO, LONGER), tmp_path / "wd"  # still training when the second starts
    refused = synpro("sweep", str(spec), "--workdir", str(workdir), "--workers", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "server database" in refused.stderr and "optuna.db" in refused.stderr
    first = warm_cli.Popen(sweep_cmd(spec, workdir), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(workdir.glob("stages/pretrain-*")), 300, first)
        second = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert "another synpro sweep is running" in second.stderr and "PostgreSQL" in second.stderr
    finally:
        first.kill()
        first.wait()


# ---- PostgreSQL: workers on brand-new databases -------------------------------------------------


@pytest.fixture
def postgres_pair(postgres_url):
    """Two fresh databases (results store, Optuna) whose URLs carry a password."""
    admin = sa.create_engine(postgres_url)
    optuna_db = make_url(postgres_url).database + "_optuna"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{optuna_db}"')
    admin.dispose()
    with_password = make_url(postgres_url).set(password=PASSWORD)
    yield (with_password.render_as_string(hide_password=False),
           with_password.set(database=optuna_db).render_as_string(hide_password=False))
    admin = sa.create_engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{optuna_db}" WITH (FORCE)')
    admin.dispose()


def assert_no_password(*folders: Path, texts=()) -> None:
    for text in texts:
        assert PASSWORD not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), f"password written to {path}"


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_on_fresh_postgres_finish_a_grid_once_and_write_no_password(tmp_path, postgres_pair):
    store, optuna_url = postgres_pair
    spec, workdir = write_spec(tmp_path, FOUR), tmp_path / "wd"
    result = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", "--workers", "3",
                    "--store", store, "--optuna-storage", optuna_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "4/4 trials complete" in result.stdout
    assert_settled(store, optuna_url, sqlite_urls(workdir)[2], FOUR)
    workers = {t.user_attrs["synpro.owner"] for t in optuna_trials(optuna_url)}
    assert len(workers) >= 2  # the grid was shared out
    assert_no_password(workdir, texts=(result.stdout, result.stderr))
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        assert PASSWORD not in conn.execute(sa.text("select spec_yaml from studies")).scalar_one()
        assert "***" in conn.execute(sa.text("select spec_yaml from studies")).scalar_one()
    engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_workers_trial_is_taken_over_by_another_worker(tmp_path, postgres_pair):
    """Three separate `synpro sweep` processes with workdirs of their own; one dies mid-trial."""
    store, optuna_url = postgres_pair
    spec = write_spec(tmp_path, FOUR)
    db = ["--store", store, "--optuna-storage", optuna_url]
    procs = [warm_cli.Popen(sweep_cmd(spec, tmp_path / f"wd{i}", *db), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **({"SYNPRO_KILL_AT": "store.arm_result:1"} if i == 0 else {})})
             for i in range(3)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert procs[0].returncode == -signal.SIGKILL, outputs[0][1][-3000:]
    for proc, (stdout, stderr) in zip(procs[1:], outputs[1:]):
        assert proc.returncode == 0, stderr[-5000:]
    assert any("failed: its worker" in stdout for stdout, _ in outputs[1:])
    from optuna.trial import TrialState

    trials = optuna_trials(optuna_url)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(t.params["training.lr"] for t in trials if t.state == TrialState.COMPLETE) == sorted(FOUR)
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        states = conn.execute(sa.text("select state, count(*) from trials group by state")).all()
        assert dict(states) == {"finished": 4}
        assert conn.execute(sa.text("select count(*) from arms where state = 'finished'")).scalar() == 8
    engine.dispose()
    for i in range(3):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(sqlite_urls(tmp_path / f"wd{i}")[2])
        runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=1000)
        # The dead worker's own MLflow store is only ended by a sweep on that workdir; the others are clean.
        if i:
            assert {r.info.status for r in runs} == {"FINISHED"}
    assert_no_password(*(tmp_path / f"wd{i}" for i in range(3)), texts=[o for pair in outputs for o in pair])


# ---- machine faults --------------------------------------------------------------------------------


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to make a real read-only or full disk: {done.stderr.strip()}")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_workdir_is_exit_2_naming_the_file(tmp_path, mounts):
    spec, workdir = write_spec(tmp_path, TWO), tmp_path / "ro"
    _mount_tmpfs(workdir, "size=1m,ro")
    mounts.append(workdir)
    result = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and "read-only" in message and str(workdir) in message
    assert "writable" in message


def test_a_full_disk_is_exit_2_and_ends_the_study_run_failed(tmp_path, mounts):
    """MLflow's artifacts live on a disk that is full: the study's run ends FAILED, not RUNNING."""
    spec, workdir = write_spec(tmp_path, TWO), tmp_path / "wd"
    full = tmp_path / "full"
    _mount_tmpfs(full, "size=16k")
    mounts.append(full)
    with pytest.raises(OSError):  # fill it
        with open(full / "filler", "wb") as handle:
            while True:
                handle.write(b"x" * 4096)
                handle.flush()
    workdir.mkdir()
    (workdir / "mlartifacts").symlink_to(full)
    result = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and "disk is full" in message and "free space" in message
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_urls(workdir)[2])
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert runs and "RUNNING" not in {r.info.status for r in runs}
    assert {r.info.status for r in runs if r.data.tags["synpro.level"] == "study"} == {"FAILED"}


# ---- SynPro's refresh loop: a kill inside each refresh stage ---------------------------------------

REFRESH = """
experiment: {{name: tiny, seed: 1}}
tokenizer: {{vocab_size: 300}}
model: {{preset: tiny}}
budget: {{unique_tokens: 2000, total_tokens: 6000, validation_tokens: 1000}}
training: {{lr: 1.0e-2, warmup_tokens: 1000, batch_size: 8, seq_len: 32, eval_interval_tokens: 1024}}
generation:  # the parrot's fixed answer passes these filters: round 1 trains on a usable set; transformers
  # hands over batch_size windows a call, so a kill after the first batch leaves two records
  generator: {{model: {model}, backend: transformers, max_new_tokens: 48, batch_size: 2, temperature: 0}}
  window_tokens: 64
  max_windows: 6
  operations:
    rephrase: {{kind: rephrase, min_chars: 10, min_length_ratio: 0, max_length_ratio: 100, min_similarity: -1}}
refresh: {{schedule: tokens, at_tokens: [2048], max_rounds: 1}}
probe: {{steps: 2, batch_size: 2, max_tokens: 64, eval_examples: 2}}
rewards:
  weights: {{rephrase: {{format: 1.0, length: 1.0, influence: 1.0}}}}
  influence_min_chars: 0
grpo: {{steps: 3, lr: 1.0e-5, num_generations: 2, prompts_per_step: 1, heldout_prompts: 2, eval_every: 2,
        eval_samples: 1, save_every: 1, backend: transformers}}
arms: [{{kind: repetition}}, {{kind: synpro, operations: [rephrase]}}]
search:
  sampler: grid
  objective: {{arm: repetition, metric: final_val_loss, direction: minimize}}
  heartbeat_seconds: 1
  stale_after_seconds: 10
  params:
    training.lr: {{type: categorical, choices: [1.0e-2]}}
"""
# Outputs that must be byte-equal to an uninterrupted run's (the rest hold wall-clock seconds).
DETERMINISTIC = (".safetensors", ".bin", "curve.jsonl", "records.jsonl")


def _manifests(workdir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.glob("stages/*/_stage.json")}


def _stage_names(workdir: Path) -> dict[str, str]:
    """Folder names by role, read from a finished run (keys do not depend on the workdir)."""
    names = {}
    for path in workdir.glob("stages/*/_stage.json"):
        manifest = json.loads(path.read_text())
        role = manifest["kind"]
        if role == "pretrain":
            role = "round1" if "parent" in manifest["inputs"] else ("round0" if manifest["label"] == "synpro"
                                                                    else "repetition")
        names[role] = path.parent.name
    assert set(names) == {"pools", "repetition", "round0", "probe", "grpo", "synthesize", "round1"}, names
    return names


def _deterministic_outputs(workdir: Path) -> dict[str, str]:
    out = {}
    for manifest in workdir.glob("stages/*/_stage.json"):
        for name, entry in json.loads(manifest.read_text())["outputs"].items():
            if name.endswith(DETERMINISTIC):
                out[f"{manifest.parent.name}/{name}"] = entry["sha256"]
    return out


def _untouched(before: dict, workdir: Path) -> None:
    """Every stage that had finished before the kill still holds the very same manifest (not redone)."""
    after = _manifests(workdir)
    assert {name: after.get(name) for name in before} == before


@pytest.mark.slow
def test_a_kill_in_each_refresh_stage_resumes_that_stage(tmp_path, parrot_model):
    """Killed in the probe, then in GRPO after its second checkpoint, then in the new set's synthesis after
    its first batch, then in the continued pretraining after its second checkpoint: each re-run redoes no
    finished stage and picks the killed one up where it stopped; the last ends as an uninterrupted run."""
    specs = {}
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
        specs[name] = tmp_path / name / "tiny.yaml"
        specs[name].write_text(REFRESH.format(model=parrot_model))
    reference, workdir = tmp_path / "reference" / "wd", tmp_path / "killed" / "wd"
    done = warm_cli.run(sweep_cmd(specs["reference"], reference), cwd=reference.parent, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {role: workdir / "stages" / name for role, name in _stage_names(reference).items()}
    spec = specs["killed"]

    run_killed(spec, workdir, "probe.saved")  # θ′ written, the probe stage not finished
    theta_prime = names["probe"] / "theta_prime" / "model.safetensors"
    made = theta_prime.stat().st_mtime_ns
    before = _manifests(workdir)
    assert set(before) == {names[r].name for r in ("pools", "repetition", "round0")}

    run_killed(spec, workdir, "grpo.checkpoint:2")
    _untouched(before, workdir)
    assert theta_prime.stat().st_mtime_ns == made  # θ′ reused, not trained again
    grpo = names["grpo"]
    assert (grpo / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (grpo / "_stage.json").exists()
    logged = (grpo / "metrics.jsonl").read_text().splitlines()
    before = _manifests(workdir)

    run_killed(spec, workdir, "synthesize.batch:1")
    _untouched(before, workdir)
    assert json.loads((grpo / "_stage.json").read_text())["metrics"]["resumed_at"] == 2
    lines = (grpo / "metrics.jsonl").read_text().splitlines()
    assert lines[:len(logged)] == logged  # the killed session's steps kept, once
    assert [json.loads(line)["step"] for line in lines if json.loads(line)["kind"] == "train"] == [1, 2, 3]
    synthesize = names["synthesize"]
    written = (synthesize / "records.jsonl").read_text().splitlines()
    assert len(written) == 2 and not (synthesize / "_stage.json").exists()  # one batch of two windows
    before = _manifests(workdir)

    run_killed(spec, workdir, "pretrain.checkpoint:2")
    _untouched(before, workdir)
    made_set = json.loads((synthesize / "_stage.json").read_text())
    assert made_set["metrics"]["resumed_at_window"] == 2 and made_set["metrics"]["windows"] == 6
    assert (synthesize / "records.jsonl").read_text().splitlines()[:2] == written
    import torch

    checkpoints = names["round1"] / "checkpoints"
    latest = torch.load(checkpoints / (checkpoints / "LATEST").read_text() / "state.pt", weights_only=True)
    assert latest["tokens"] > 2048 and not (names["round1"] / "_stage.json").exists()
    before = _manifests(workdir)

    rerun = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=spec.parent)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "1/1 trials complete" in rerun.stdout
    _untouched(before, workdir)
    assert json.loads((names["round1"] / "_stage.json").read_text())["metrics"]["resumed_at_tokens"] == \
        latest["tokens"]
    assert outcome(results_json(workdir)) == outcome(results_json(reference))
    # GRPO resumed from its checkpoint trains the same generator: every model, set and curve byte-equal.
    assert _deterministic_outputs(workdir) == _deterministic_outputs(reference)
    assert_settled(*sqlite_urls(workdir), (1.0e-2,))
    from store import Store

    with Store(sqlite_urls(workdir)[0]) as store:  # the refresh as the report reads it
        [refresh] = store.rounds("tiny")
    assert (refresh["arm"], refresh["round"], refresh["start_tokens"]) == ("synpro", 1, 2048)
    assert [r["step"] for r in refresh["grpo"]["rephrase"] if r["kind"] == "train"] == [1, 2, 3]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_urls(reference)[2])  # a run never killed logs the refresh's curves too
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    [arm_run] = [r for r in runs if r.data.tags.get("synpro.arm") == "synpro" and r.data.tags["synpro.level"] == "arm"]
    # Each refresh stage on a child run of the arm's, GRPO's curves against its own steps.
    [grpo_run] = [r for r in runs if r.data.tags["synpro.level"] == "refresh" and "grpo" in r.info.run_name]
    assert grpo_run.data.tags["mlflow.parentRunId"] == arm_run.info.run_id
    assert grpo_run.info.run_name.startswith("round 1 grpo rephrase · synpro")
    assert sorted(m.step for m in client.get_metric_history(grpo_run.info.run_id, "grpo/reward")) == [1, 2, 3]
    assert not [key for key in arm_run.data.metrics if key.startswith(("round", "grpo"))]
