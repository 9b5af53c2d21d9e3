"""End to end through the real CLI: a spec becomes arms, effective tokens, MLflow runs and SQL rows,
and a killed or interrupted sweep resumes without redoing or duplicating anything."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

import warm_cli

TINY = """
experiment: {{name: tiny, seed: 1}}
tokenizer: {{vocab_size: {vocab}}}
model: {{preset: tiny}}
budget: {{unique_tokens: {unique}, total_tokens: {total}, validation_tokens: {validation}}}
training: {{lr: 1.0e-2, warmup_tokens: {warmup}, batch_size: 8, seq_len: {seq_len}, eval_interval_tokens: {every}}}
arms: [{{kind: repetition}}, {{kind: oracle}}]
{eval}search:
  sampler: grid
  # A defined objective on every point: at these sizes repetition can end below the oracle's curve,
  # where effective tokens (and so multipliers) are undefined and Optuna would record a failure.
  objective: {{arm: repetition, metric: final_val_loss, direction: minimize}}
  heartbeat_seconds: 1
  stale_after_seconds: {stale}
  params:
    training.lr: {{type: categorical, choices: {lrs}}}
"""
SIZES = {"vocab": 512, "unique": 6000, "total": 24000, "validation": 4000, "warmup": 2000, "seq_len": 64,
         "every": 4096, "stale": 2}
# Ten times the tokens: a sweep that is still training when a test interrupts it or starts a second one.
LONGER = {**SIZES, "total": 240000}
# Twice the tokens, for a test that interrupts a sweep and then runs it to the end: after the first
# checkpoint (4096 tokens) there are still ~170 steps of two arms to train, seconds against a 0.2 s poll.
INTERRUPTIBLE = {**SIZES, "total": 48000}
# A quarter of the tokens, for tests that run a sweep many times (tests/test_faults.py).
SMALLER = {"vocab": 300, "unique": 2000, "total": 6000, "validation": 1000, "warmup": 1000, "seq_len": 32,
           "every": 2048, "stale": 10}


EVAL = "eval: {tasks: [{name: synpro_cloze}], builtin: {items: 60}}\n"


def write_spec(tmp_path: Path, lrs=(1.0e-2,), sizes=SIZES, evaluate: bool = False) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(lrs=list(lrs), eval=EVAL if evaluate else "", **sizes))
    return path


def synpro(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return warm_cli.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def start_sweep(spec: Path, workdir: Path) -> subprocess.Popen:
    # Ctrl-C as a user's terminal delivers it: a runner started in the background (`cmd &`) ignores
    # SIGINT and its children inherit that, so the sweep gets the default disposition back.
    return warm_cli.Popen([sys.executable, "-m", "cli", "sweep", str(spec), "--workdir", str(workdir), "--no-progress"],
                          cwd=spec.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          default_sigint=True)


def results_json(workdir: Path) -> list[dict]:
    result = synpro("results", "--workdir", str(workdir), "--format", "json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def row_counts(workdir: Path) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{workdir / 'synpro.db'}")
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"select count(*) from {t}")).scalar()
                  for t in ("studies", "trials", "arms", "evaluations")}
    engine.dispose()
    return counts


def mlflow_runs(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"sweep ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.2)


def test_sweep_end_to_end_and_rerun_does_nothing_new(tmp_path):
    spec, workdir = write_spec(tmp_path, evaluate=True), tmp_path / "wd"
    first = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1/1 trials complete" in first.stdout

    [trial] = results_json(workdir)
    assert trial["state"] == "finished" and trial["params"] == {"training.lr": 0.01}
    rep, oracle = trial["arms"]["repetition"], trial["arms"]["oracle"]
    for arm in (rep, oracle):
        assert arm["tokens_seen"] >= 24000 and arm["final_val_loss"] > 0
        assert arm["effective_tokens"] > 0 and arm["mlflow_run_id"]
    assert rep["unique_tokens"] == 6000 and oracle["unique_tokens"] >= 24000
    assert rep["multiplier_vs_repetition"] == pytest.approx(1.0)
    # The oracle inverts its own curve: its effective tokens are the tokens it saw.
    assert oracle["effective_tokens"] == pytest.approx(oracle["tokens_seen"], rel=0.05)
    # Repeating 6k tokens four times is worth less than 24k unique ones.
    assert rep["effective_tokens"] < oracle["effective_tokens"]
    # Downstream accuracy on the offline cloze task, and effective tokens by it (the oracle: its own tokens).
    # A 24k-token model's cloze accuracy sits near chance, so its curve need not rise monotonically and the
    # oracle's own last point can invert to an earlier crossing: D_eff by accuracy is checked for range only.
    # Each accuracy is judged against chance on the items its evaluation recorded (60 four-choice items): at
    # chance, it gets no effective tokens, and the table says "at chance" instead of a number.
    for arm in (rep, oracle):
        assert 0 < arm["final_accuracy"] < 1
        basis = arm["accuracy_basis"]
        assert basis["from"] == "evaluation" and basis["chance"] == {"synpro_cloze": pytest.approx(0.25)}
        assert 0 < basis["items"]["synpro_cloze"] <= 60
        low, high = arm["accuracy_chance_range"]
        assert arm["accuracy_at_chance"] == (low <= arm["final_accuracy"] <= high)
        if arm["accuracy_caveat"] is not None:
            assert arm["effective_tokens_accuracy"] is None and arm["multiplier_accuracy"] is None
        else:
            assert 0 < arm["effective_tokens_accuracy"] <= oracle["tokens_seen"] * 1.05 or \
                arm["effective_tokens_accuracy_extrapolated"]
    table = synpro("results", "--workdir", str(workdir), "--columns", "arm,accuracy,d_eff_acc", cwd=tmp_path).stdout
    for name, arm in trial["arms"].items():
        row = next(line for line in table.splitlines() if f" {name} " in line)
        assert ("at chance" in row) == bool(arm["accuracy_at_chance"]), row

    client, runs = mlflow_runs(workdir)
    by_level = {}
    for run in runs:
        by_level.setdefault(run.data.tags["synpro.level"], []).append(run)
    assert {k: len(v) for k, v in by_level.items()} == {"study": 1, "trial": 1, "arm": 2}
    [study], [trial_run] = by_level["study"], by_level["trial"]
    assert trial_run.data.tags["mlflow.parentRunId"] == study.info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in by_level["arm"]} == {trial_run.info.run_id}
    assert trial_run.data.params["training.lr"] == "0.01"
    # Runs named by what differs, the searched params on every arm run, no empty "Default" beside the study.
    assert trial_run.info.run_name == "trial-0 · lr=0.01"
    assert {r.info.run_name for r in by_level["arm"]} == {"repetition · lr=0.01 · seed 1", "oracle · lr=0.01 · seed 1"}
    assert {r.data.params["training.lr"] for r in by_level["arm"]} == {"0.01"}
    assert len({r.data.tags["mlflow.runColor"] for r in by_level["arm"]}) == 2  # MLflow's own colours may clash
    assert [e.name for e in client.search_experiments()] == ["tiny"]
    [line] = [line for line in first.stdout.splitlines() if line.startswith("Optuna study: ")]
    study_name = line.split()[2]
    assert study_name.startswith("tiny-") and optuna.load_study(
        study_name=study_name, storage=f"sqlite:///{workdir / 'optuna.db'}").metric_names == ["final_val_loss of repetition"]
    arm_run = next(r for r in by_level["arm"] if r.info.run_id == rep["mlflow_run_id"])
    history = client.get_metric_history(arm_run.info.run_id, "effective_tokens")
    assert [m.step for m in history] == sorted(m.step for m in history) and history[-1].step >= 24000
    val_points = len(client.get_metric_history(arm_run.info.run_id, "val_loss"))
    accuracy = client.get_metric_history(arm_run.info.run_id, "acc/avg")
    assert accuracy and [m.step for m in accuracy] == sorted(m.step for m in accuracy)
    assert {"acc/synpro_cloze", "effective_tokens_accuracy"} <= set(client.get_run(arm_run.info.run_id).data.metrics)
    artifacts = {a.path for a in client.list_artifacts(trial_run.info.run_id)}
    assert {"spec.yaml", "results.json", "loss_curves.png", "effective_tokens.png"} <= artifacts

    before = row_counts(workdir)
    stamp = {p: p.stat().st_mtime_ns for p in workdir.glob("stages/*/_stage.json")}
    again = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(0 run now)" in again.stdout
    assert row_counts(workdir) == before
    assert {p: p.stat().st_mtime_ns for p in workdir.glob("stages/*/_stage.json")} == stamp
    client, runs_again = mlflow_runs(workdir)
    assert len(runs_again) == len(runs)
    assert len(client.get_metric_history(arm_run.info.run_id, "val_loss")) == val_points


def test_killed_sweep_resumes_without_redoing_or_duplicating(tmp_path):
    spec, workdir = write_spec(tmp_path, lrs=(1.0e-2, 3.0e-3)), tmp_path / "wd"
    proc = start_sweep(spec, workdir)
    # Kill hard once the first arm of the first trial has finished and the second is under way.
    wait_for(lambda: len(list(workdir.glob("stages/pretrain-*/_stage.json"))) >= 1
             and len(list(workdir.glob("stages/pretrain-*/checkpoints/LATEST"))) >= 1, 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [done] = list(workdir.glob("stages/pretrain-*/_stage.json"))
    done_stamp = done.stat().st_mtime_ns
    time.sleep(3)  # past stale_after_seconds: the killed trial's heartbeat is stale

    resumed = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "2/2 trials complete" in resumed.stdout
    assert done.stat().st_mtime_ns == done_stamp  # the finished arm was not trained again

    trials = results_json(workdir)
    assert sorted(t["params"]["training.lr"] for t in trials) == [0.003, 0.01]
    assert all(t["state"] == "finished" and set(t["arms"]) == {"repetition", "oracle"} for t in trials)
    counts = row_counts(workdir)
    assert (counts["trials"], counts["arms"]) == (2, 4)
    engine = sa.create_engine(f"sqlite:///{workdir / 'synpro.db'}")
    with engine.connect() as conn:
        dupes = conn.execute(sa.text("select count(*) from (select arm_id, tokens from evaluations "
                                     "group by arm_id, tokens having count(*) > 1)")).scalar()
    engine.dispose()
    assert dupes == 0
    _, runs = mlflow_runs(workdir)
    assert sum(r.data.tags["synpro.level"] == "arm" for r in runs) == 4


def test_ctrl_c_exits_130_and_the_next_run_finishes(tmp_path):
    spec, workdir = write_spec(tmp_path, sizes=INTERRUPTIBLE), tmp_path / "wd"
    proc = start_sweep(spec, workdir)
    wait_for(lambda: any(workdir.glob("stages/pretrain-*/checkpoints/LATEST")), 300, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "resume" in stderr and "Traceback" not in stderr
    resumed = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    [trial] = results_json(workdir)
    assert trial["state"] == "finished"


def synthetic_sets(workdir: Path, kind: str) -> list[Path]:
    """The synthesize-stage folders of one operation kind."""
    return [p for p in (workdir / "stages").glob("synthesize-*")
            if json.loads((p / "set.json").read_text())["operation"]["kind"] == kind]


def synthetic_spec(tmp_path: Path, generator: Path) -> Path:
    """Four arms over the text the tiny parrot generator was trained to answer (so it ends its answers)."""
    from generators import doc_topics
    from synpro.generation.chunking import split_chunks

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": c}) + "\n" for d in doc_topics(12) for c in split_chunks(d, 500)))
    spec = tmp_path / "synthetic.yaml"
    spec.write_text(f"""
experiment: {{name: tiny, seed: 1}}
corpus: {{source: jsonl, path: {corpus}, min_chars: 100}}
tokenizer: {{vocab_size: 400}}
budget: {{unique_tokens: 2000, total_tokens: 6000, validation_tokens: 1000}}
training: {{lr: 1.0e-2, warmup_tokens: 1000, batch_size: 8, seq_len: 64, eval_interval_tokens: 1024}}
generation:
  generator: {{model: {generator}, backend: transformers, temperature: 0, max_new_tokens: 60, batch_size: 4}}
  window_tokens: 400
  max_windows: 6
  operations:  # the parrot's fixed answer is short and off-topic: test the plumbing, not its quality
    rephrase: {{kind: rephrase, min_chars: 10, min_length_ratio: 0, min_similarity: -1}}
arms: [{{kind: repetition}}, {{kind: oracle}}, {{kind: prompted}}, {{kind: prompted, name: rewrite}}]
search: {{objective: {{arm: repetition, metric: final_val_loss, direction: minimize}}}}
""")
    return spec


def test_synthetic_arms_end_to_end(tmp_path, parrot_model):
    """prompted and synpro arms: a synthetic set made once, mixed with organic, logged with its metrics."""
    workdir = tmp_path / "wd"
    result = synpro("sweep", str(synthetic_spec(tmp_path, parrot_model)), "--workdir", str(workdir), "--no-progress",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [trial] = results_json(workdir)
    arms = trial["arms"]
    assert set(arms) == {"repetition", "oracle", "prompted", "rewrite"}  # two arms on one set
    for name in ("prompted", "rewrite"):
        assert arms[name]["unique_tokens"] == 2000  # the organic budget; synthetic tokens come on top
        # null: beyond the oracle's asymptote (infinite D_eff), which tiny runs can reach
        assert arms[name]["effective_tokens"] is None or arms[name]["effective_tokens"] > 0
        # At this scale repetition can end below the oracle's floor, where its D_eff is infinite (null in
        # JSON) and a finite arm's multiplier is 0 or undefined; when it is finite, the synthetic arms have one.
        [repetition] = arms["repetition"]["per_seed"].values()
        if repetition["tail_effective_tokens"] is None:
            assert arms[name]["multiplier_vs_repetition"] in (None, 0.0)
        else:
            assert arms[name]["multiplier_vs_repetition"] is not None
        # Mixing in the synthetic set changes what the model saw, so the curve differs from repetition's.
        assert arms[name]["final_val_loss"] != arms["repetition"]["final_val_loss"]
    [rephrase_set] = synthetic_sets(workdir, "rephrase")
    records = [json.loads(line) for line in (rephrase_set / "records.jsonl").read_text().splitlines()]
    assert len(records) == 6 and any(r["passed"] for r in records)
    # Every arm says what its synthetic data was: none for the baselines, the set's share of what it saw else.
    stats = json.loads((rephrase_set / "stats.json").read_text())["stats"]
    for name in ("repetition", "oracle"):
        assert arms[name]["synthetic_share"] == 0.0 and arms[name]["per_seed"]["1"]["synthetic_sets"] == {}
    for name in ("prompted", "rewrite"):
        seed = arms[name]["per_seed"]["1"]
        [(set_name, made)] = seed["synthetic_sets"].items()
        assert set_name == "rephrase" and made["operation"] == "rephrase" and made["heldout_pass_rate"] is None
        assert made["pass_rate"] == stats["pass_rate"] and made["tokens"] > 0
        assert seed["synthetic_tokens"] == made["tokens_seen"] > 0
        assert 0 < arms[name]["synthetic_share"] == seed["synthetic_share"] == pytest.approx(
            made["tokens_seen"] / arms[name]["tokens_seen"])
        assert arms[name]["synthetic_set_shares"]["rephrase"]["share"] == pytest.approx(arms[name]["synthetic_share"])
    # The table's row of each arm says how much synthetic text it saw.
    from typer.testing import CliRunner

    from cli.main import app
    from synpro.caveats import percent
    from synpro.display import fmt

    table = CliRunner().invoke(app, ["results", "--workdir", str(workdir), "--columns", "arm,synthetic,synthetic_tokens"],
                               env={"COLUMNS": "100"}).output
    for name, arm in arms.items():
        row = next(line for line in table.splitlines() if f" {name} " in line)
        assert percent(arm["synthetic_share"]) in row and fmt(arm["synthetic_tokens"]) in row, row

    client, runs = mlflow_runs(workdir)
    trial_run = next(r for r in runs if r.data.tags["synpro.level"] == "trial")
    assert 0 < trial_run.data.metrics["synthetic/rephrase/pass_rate"] <= 1
    artifacts = {a.path for a in client.list_artifacts(trial_run.info.run_id, "synthetic/rephrase")}
    assert {"synthetic/rephrase/samples.json", "synthetic/rephrase/stats.json"} <= artifacts


def refused_rephrase(result) -> str:
    """A sweep stopped with exit 2 (no traceback) for a rephrase set without usable output; its message, on one line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "generation.operations.rephrase" in message and "too little usable 'rephrase' output" in message
    return message


def test_a_generator_that_emits_garbage_is_exit_2_naming_the_operation(tmp_path, random_model):
    """Every output of a random model fails the filters: a clear error, not synthetic arms equal to repetition."""
    spec = synthetic_spec(tmp_path, random_model)
    workdir = tmp_path / "wd"
    for _ in range(2):  # the second run reuses the finished (rejected) set and says the same
        message = refused_rephrase(synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress",
                                          cwd=tmp_path))
        assert "0 of 6 windows passed" in message and "training.seq_len = 64" in message
    [rephrase_set] = synthetic_sets(workdir, "rephrase")
    assert len((rephrase_set / "records.jsonl").read_text().splitlines()) == 6  # generated once, kept for audit


def test_the_queue_holds_each_point_once_and_retries_a_failed_point_a_bounded_number_of_times(tmp_path):
    """Waiting trials have no params yet: the queue must recognise them by their enqueued point."""
    from optuna.trial import TrialState

    from store import Store
    from synpro.spec import load_spec
    from synpro.sweep import MAX_RETRIES, _open_study, _Sweep
    from synpro.tracking import NullTracker

    spec = load_spec(write_spec(tmp_path, lrs=(1.0e-2, 3.0e-3, 1.0e-3, 3.0e-4))).with_params(
        {"experiment.workdir": str(tmp_path / "wd")})
    with Store(spec.store_url()) as store:
        study = _open_study(spec)
        sweep = _Sweep(spec, store, NullTracker(), study, 4, lambda _: None)
        for _ in range(3):  # every later run of the sweep queues again
            sweep.queue(study.get_trials(deepcopy=False), sweep.done(study.get_trials(deepcopy=False)))
        assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * 4
        storage, first = study._storage, {"training.lr": 1.0e-2}
        for attempt in range(MAX_RETRIES + 1):
            [queued] = [t for t in study.get_trials() if t.state == TrialState.WAITING
                        and t.system_attrs["fixed_params"] == first]  # queued again after each failure, once
            storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
            storage.set_trial_state_values(queued._trial_id, TrialState.FAIL)
            sweep.queue(study.get_trials(deepcopy=False), set())
        waiting = [t.system_attrs["fixed_params"] for t in study.get_trials() if t.state == TrialState.WAITING]
        assert sorted(p["training.lr"] for p in waiting) == [3.0e-4, 1.0e-3, 3.0e-3]
        assert sweep.given_up == [{"training.lr": 1.0e-2}]
        # Running the sweep again resumes it: the earlier run's failures use up none of this run's retries.
        again = _Sweep(spec, store, NullTracker(), study, 4, lambda _: None)
        again.queue(study.get_trials(deepcopy=False), set())
        assert again.given_up == [] and first in [t.system_attrs["fixed_params"] for t in study.get_trials()
                                                  if t.state == TrialState.WAITING]


@pytest.mark.slow
def test_a_two_objective_nsga2_sweep_stores_both_values_and_its_pareto_front(tmp_path, parrot_model):
    """NSGA-II over the learning rate with two objectives of the prompted arm, its loss and its set's
    similarity to the source: Optuna is told both, the store keeps both, results mark the front and
    compare plots it; a rerun resumes without running anything."""
    import optuna
    from typer.testing import CliRunner

    from cli.main import app
    from synpro.pareto import non_dominated

    def cli(*args: str) -> str:  # the read-only commands in this process: one import for all of them
        result = CliRunner().invoke(app, [*args, "--workdir", str(workdir)])
        assert result.exit_code == 0, result.output
        return result.output

    spec = synthetic_spec(tmp_path, parrot_model)
    text = spec.read_text().replace("{kind: oracle}, {kind: prompted}, {kind: prompted, name: rewrite}",
                                    "{kind: prompted}")
    text = text.replace("search: {objective: {arm: repetition, metric: final_val_loss, direction: minimize}}", """\
search:
  sampler: nsga2
  n_trials: 2
  objectives:
    - {arm: prompted, metric: final_val_loss, direction: minimize}
    - {arm: prompted, metric: synthetic_similarity, direction: maximize}
  params:
    training.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
""")
    spec.write_text(text)
    workdir = tmp_path / "wd"
    first = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2/2 trials complete" in first.stdout and "Pareto" in first.stdout

    trials = json.loads(cli("results", "--format", "json"))
    assert len(trials) == 2 and {t["state"] for t in trials} == {"finished"}
    [rephrase_set] = synthetic_sets(workdir, "rephrase")
    similarity = json.loads((rephrase_set / "stats.json").read_text())["metrics"]["similarity_mean"]
    for trial in trials:
        loss, similar = trial["objective_values"]
        assert trial["objective_value"] == loss == pytest.approx(trial["arms"]["prompted"]["final_val_loss"])
        assert similar == pytest.approx(similarity)  # one set, shared by every trial
        assert trial["arms"]["prompted"]["per_seed"]["1"]["synthetic_similarity"] == pytest.approx(similarity)
    front = non_dominated([t["objective_values"] for t in trials], ["minimize", "maximize"])
    assert [t["pareto_optimal"] for t in trials] == front
    # Equal similarity: the front is the lowest loss (its ties included).
    best = min(t["objective_values"][0] for t in trials)
    assert front == [t["objective_values"][0] == best for t in trials]

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{workdir / 'optuna.db'}")  # its only study
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    told = {t.number: t.values for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    assert told == {t["trial"]: pytest.approx(t["objective_values"]) for t in trials}

    table = cli("results")
    assert "Pareto" in table and "*" in table
    header = cli("results", "--format", "csv").splitlines()[0].split(",")
    assert header[3:5] == ["objective_values", "pareto_optimal"]

    payload = json.loads(cli("compare", "--format", "json"))
    pareto = workdir / "reports" / "tiny" / "pareto.png"
    assert str(pareto) in payload["plots"] and pareto.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [t["trial"] for t in payload["pareto"]["tiny"]["trials"]] == [t["trial"] for t in trials
                                                                         if t["pareto_optimal"]]

    counts = row_counts(workdir)
    again = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2/2 trials complete (0 run now)" in again.stdout
    assert row_counts(workdir) == counts and json.loads(cli("results", "--format", "json")) == trials




ABLATIONS = """\
refresh: {schedule: tokens, at_tokens: [2048], max_rounds: 1}
probe: {steps: 1, batch_size: 2, max_tokens: 64, eval_examples: 2}
rewards:
  weights: {rephrase: {format: 1.0, length: 1.0, influence: 1.0}, reformat: {format: 1.0, influence: 1.0}}
  influence_min_chars: 0
grpo: {steps: 1, lr: 1.0e-7, num_generations: 2, prompts_per_step: 1, heldout_prompts: 1, eval_samples: 1,
       max_completion_length: 16, backend: transformers}
arms:
  - {kind: repetition}
  - {kind: synpro}
  - {kind: synpro, name: repro, influence: false}
  - {kind: synpro, name: static, refresh: false, operations: [rephrase]}
  - {kind: synpro, name: rephrase-only, operations: [rephrase]}
  - {kind: synpro, name: latest, pool: latest}
"""


@pytest.mark.slow
def test_synpro_and_its_ablations_finish_side_by_side(tmp_path, parrot_model):
    """Every ablation is an option of one arm: a sweep with all of them stores each next to repetition, and
    ablations that agree up to a stage share that stage (one GRPO run, not one per arm). The parrot
    generator's rephrases pass the filters, which every set a round trains on must. It answers in prose
    only, so a real reformat set would hold no entries (refused before its round trains): the operation
    the arms call `reformat` is a second rephrase here, with its own rewards and so its own GRPO runs."""
    spec = synthetic_spec(tmp_path, parrot_model)
    arms = "arms: [{kind: repetition}, {kind: oracle}, {kind: prompted}, {kind: prompted, name: rewrite}]\n"
    text = spec.read_text().replace(arms, ABLATIONS)
    rephrase = "{kind: rephrase, min_chars: 10, min_length_ratio: 0, min_similarity: -1}\n"
    text = text.replace(rephrase, rephrase + "    reformat: " + rephrase)
    spec.write_text(text.replace("arm: repetition, metric: final_val_loss", "arm: synpro, metric: final_val_loss"))
    workdir = tmp_path / "wd"
    result = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from typer.testing import CliRunner

    from cli.main import app

    def cli(*args: str) -> str:  # the read-only commands in this process: one import for both
        shown = CliRunner().invoke(app, [*args, "--workdir", str(workdir)])
        assert shown.exit_code == 0, shown.output
        return shown.output

    [trial] = json.loads(cli("results", "--format", "json"))
    assert trial["state"] == "finished"
    names = ["repetition", "synpro", "repro", "static", "rephrase-only", "latest"]
    assert sorted(trial["arms"]) == sorted(names)
    for name in names:
        assert trial["arms"][name]["per_seed"]["1"]["tokens_seen"] >= 6000, name
    table = cli("results")
    assert all(name in table for name in names)
    grpo = [json.loads(p.read_text())["label"] for p in workdir.glob("stages/grpo-*/_stage.json")]
    # synpro's two generators (rephrase-only and latest reuse them) and two without influence, trained
    # from the base model: the same runs for repro and static
    assert sorted(grpo) == ["reformat", "reformat", "rephrase", "rephrase"]
    assert len(list(workdir.glob("stages/probe-*/_stage.json"))) == 1  # repro and static run no probe


# One refresh at 2,048 tokens, CPU-sized probe and GRPO, for the rephrase operation alone.
REFRESH = ABLATIONS[:ABLATIONS.index("arms:")].replace(", reformat: {format: 1.0, influence: 1.0}", "")


def refresh_spec(tmp_path: Path, generator: Path, arms: str, objective: str) -> Path:
    """The synthetic spec with one operation, SynPro's refresh settings and the given arms."""
    spec = synthetic_spec(tmp_path, generator)
    text = spec.read_text().replace(
        "arms: [{kind: repetition}, {kind: oracle}, {kind: prompted}, {kind: prompted, name: rewrite}]\n",
        REFRESH + arms)
    spec.write_text(text.replace("arm: repetition, metric: final_val_loss", f"arm: {objective}, metric: final_val_loss"))
    return spec


def test_a_refresh_set_without_usable_output_stops_the_sweep_before_training_on_it(tmp_path, random_model):
    """No set exists before the refresh (round 0 is organic only), so the first set is made at round 1, by a
    GRPO-trained random model: its garbage fails the filters, and the sweep stops there with exit 2."""
    spec = refresh_spec(tmp_path, random_model, "arms: [{kind: synpro, operations: [rephrase]}]\n", "synpro")
    workdir = tmp_path / "wd"
    message = refused_rephrase(synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path))
    assert "in round 1 of arm 'synpro'" in message and "0 of 6 windows passed the filters (pass rate 0%)" in message
    assert "GRPO-trained generator (grpo-" in message
    [round_0] = [p for p in workdir.glob("stages/pretrain-*") if p.is_dir()]  # round 1 never started
    assert json.loads((round_0 / "_stage.json").read_text())["config"]["mixture"] == ["organic"]
    assert len(list(workdir.glob("stages/grpo-*/_stage.json"))) == 1  # the refresh ran up to the set
    # `synpro plan` shows the refresh the sweep reached (round 0 done, so the round it started is known)
    plan = synpro("plan", str(spec), "--workdir", str(workdir), "--format", "json", cwd=tmp_path)
    rows = json.loads(plan.stdout)
    done = {r["kind"]: r["done"] for r in rows if r["kind"] in ("probe", "grpo", "synthesize")}
    assert done == {"probe": True, "grpo": True, "synthesize": True}, plan.stdout
    assert [r["done"] for r in rows if r["kind"] == "pretrain" and r["arm"] == "synpro"] == [True, False]


def test_initial_sets_train_round_0_on_synthetic_tokens_at_the_share_asked(tmp_path, parrot_model):
    """`initial_sets`: GRPO and a set before the first pretraining (shared by key with a static arm), and
    round 0 reads them; `synthetic_share: 0.5` puts half of the tokens trained on the set instead of its
    token-count share (a few percent here)."""
    arms = """\
arms:
  - {kind: synpro, name: initial, operations: [rephrase], initial_sets: true}
  - {kind: synpro, name: half, operations: [rephrase], initial_sets: true, synthetic_share: 0.5}
  - {kind: synpro, name: static, operations: [rephrase], refresh: false}
"""
    spec = refresh_spec(tmp_path, parrot_model, arms, "initial")
    spec.write_text(spec.read_text().replace("max_rounds: 1", "max_rounds: 0"))  # round 0 runs to T
    workdir = tmp_path / "wd"
    plan = synpro("plan", str(spec), "--workdir", str(workdir), "--format", "json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    rows = json.loads(plan.stdout)
    kinds = [r["kind"] for r in rows]
    first = next(i for i, r in enumerate(rows) if r["arm"] == "initial")
    assert kinds.count("grpo") == 1 and kinds.count("synthesize") == 1  # one generator and set for all three
    assert kinds.index("grpo") < kinds.index("synthesize") < first and rows[first]["kind"] == "pretrain"

    result = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifests = {m["label"]: m for m in (json.loads(p.read_text()) for p in workdir.glob("stages/pretrain-*/_stage.json"))}
    [rephrase_set] = synthetic_sets(workdir, "rephrase")
    shares = {}
    for name in ("initial", "half"):
        manifest = manifests[name]
        assert manifest["config"]["mixture"] == ["organic", "rephrase-r0"]
        assert manifest["inputs"]["rephrase-r0"] == rephrase_set.name.removeprefix("synthesize-")
        assert manifest["metrics"]["epochs_per_source"][rephrase_set.name] > 0
        shares[name] = manifest["metrics"]["synthetic_token_share"]
    assert 0 < shares["initial"] < 0.2 and 0.4 < shares["half"] < 0.6
    assert manifests["half"]["config"]["synthetic_share"] == 0.5 and "synthetic_share" not in manifests["initial"]["config"]
    [trial] = results_json(workdir)
    epochs = {n: trial["arms"][n]["per_seed"]["1"]["epochs_per_source"][rephrase_set.name] for n in ("initial", "half")}
    # The set is repeated to fill its share of T: its epochs grow with the share, organic's shrink.
    assert epochs["half"] / epochs["initial"] == pytest.approx(shares["half"] / shares["initial"])
    assert epochs["half"] > 2 * epochs["initial"]
