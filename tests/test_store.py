"""The results store on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from store import Store
from store.schema import Base
from store.store import alembic_config
from synpro.errors import InputError

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
BIG = 40_000_000_000  # paper-scale token counts overflow 32-bit columns


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as opened:
        yield opened


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def populate(store: Store) -> dict[str, int]:
    """Two studies; trials inserted out of Optuna order; one finished arm with a curve."""
    objective = {"arm": "oracle", "metric": "final_val_loss", "direction": "minimize"}
    sid = store.upsert_study("zeta", "experiment: {name: zeta}\n", objective, mlflow_run_id="run-s")
    other = store.upsert_study("alpha", "experiment: {name: alpha}\n", {"arm": "repetition"})
    late = store.upsert_trial(sid, "hash-b", {"lr": 0.01}, optuna_number=1, mlflow_run_id="run-t1")
    early = store.upsert_trial(sid, "hash-a", {"lr": 0.001}, optuna_number=0, mlflow_run_id="run-t0")
    store.upsert_trial(other, "hash-c", {"lr": 0.1}, optuna_number=0)
    rep = store.upsert_arm(early, "repetition", "repetition", "cfg-r", BIG, 4 * BIG, mlflow_run_id="run-a0")
    oracle = store.upsert_arm(early, "oracle", "oracle", "cfg-o", 4 * BIG, 4 * BIG)
    store.add_evaluations(rep, [{"tokens": BIG, "step": 10, "val_loss": 4.0, "train_loss": 4.1},
                                {"tokens": 2 * BIG, "step": 20, "val_loss": 3.5}])
    store.set_arm_result(rep, final_val_loss=3.5, tokens_seen=4 * BIG, effective_tokens=float(BIG),
                         effective_tokens_extrapolated=False, multiplier_vs_repetition=1.0)
    store.finish_trial(early, "finished", objective_value=3.5)
    return {"study": sid, "early": early, "late": late, "rep": rep, "oracle": oracle}


# ---- schema and migrations ----------------------------------------------------------------------


def test_new_store_is_at_head_and_matches_the_orm(store: Store) -> None:
    assert revision(store.engine) == HEAD
    assert schema_diff(store.engine) == []
    # The comparison can fail: without an index the ORM declares, it reports the drift.
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_arms_name"))
    assert [d[0] for d in schema_diff(store.engine)] == ["add_index"]


def test_store_at_base_is_upgraded_when_opened(url: str) -> None:
    engine = sa.create_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
    assert revision(engine) is None
    assert "trials" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    with Store(url) as store:
        assert revision(store.engine) == HEAD
        assert schema_diff(store.engine) == []


def test_store_at_head_reopens_unchanged_with_its_rows(url: str) -> None:
    with Store(url) as store:
        populate(store)
        before = store.results()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement.strip().upper())

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        with Store(url) as store:
            assert revision(store.engine) == HEAD
            after = store.results()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert after == before
    assert not [s for s in statements if s.startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))]


# ---- idempotent writes --------------------------------------------------------------------------


def test_upserts_are_idempotent(store: Store) -> None:
    sid = store.upsert_study("s", "v1", {"arm": "oracle"}, mlflow_run_id="run-1")
    assert store.upsert_study("s", "v2", {"arm": "oracle"}) == sid
    trial = store.upsert_trial(sid, "h", {"lr": 1e-3}, optuna_number=3)
    store.finish_trial(trial, "failed")
    # Optuna retries the same params under a new number: same row, latest number, running again.
    assert store.upsert_trial(sid, "h", {"lr": 1e-3}, optuna_number=7, mlflow_run_id="run-2") == trial
    arm = store.upsert_arm(trial, "repetition", "repetition", "cfg", BIG, 4 * BIG)
    assert store.upsert_arm(trial, "repetition", "repetition", "cfg", BIG, 4 * BIG) == arm
    points = [{"tokens": t * BIG, "step": t, "val_loss": 5.0 - t} for t in (1, 2, 3)]
    assert store.add_evaluations(arm, points) == 3
    assert store.add_evaluations(arm, points[1:] + [{"tokens": 3 * BIG, "step": 3, "val_loss": 1.25}]) == 2
    assert (count(store, "studies"), count(store, "trials"), count(store, "arms"), count(store, "evaluations")) \
        == (1, 1, 1, 3)
    [row] = store.results()
    assert (row["trial"], row["state"], row["mlflow_run_id"]) == (7, "running", "run-2")
    assert [p["val_loss"] for p in store.curves("s")] == [4.0, 3.0, 1.25]
    with store.engine.connect() as conn:
        spec, run = conn.execute(sa.text("SELECT spec_yaml, mlflow_run_id FROM studies")).one()
    assert (spec, run) == ("v2", "run-1")  # an upsert without a run id keeps the known one


def test_trial_lifecycle(store: Store) -> None:
    sid = store.upsert_study("s", "", {})
    trial = store.upsert_trial(sid, "h", {}, optuna_number=0)
    with store.engine.connect() as conn:
        first = conn.execute(sa.text("SELECT heartbeat_at FROM trials")).scalar_one()
    store.heartbeat(trial)
    store.finish_trial(trial, "finished", objective_value=2.5)
    with store.engine.connect() as conn:
        beat, finished = conn.execute(sa.text("SELECT heartbeat_at, finished_at FROM trials")).one()
    assert beat > first and finished is not None
    assert store.results()[0]["objective_value"] == 2.5
    store.upsert_trial(sid, "h", {}, optuna_number=1)  # a new attempt forgets the old outcome
    assert store.results()[0]["objective_value"] is None
    with pytest.raises(ValueError, match="state"):
        store.finish_trial(trial, "running")
    with pytest.raises(ValueError, match="state"):
        store.upsert_trial(sid, "h", {}, optuna_number=1, state="done")
    with pytest.raises(LookupError):
        store.heartbeat(trial + 100)
    with pytest.raises(ValueError, match="val_loss"):
        store.add_evaluations(1, [{"tokens": 1, "step": 1}])


def test_a_trial_is_complete_only_with_every_arm_stored(store: Store) -> None:
    """What "N/N trials complete" counts: a finished trial row is not enough, its arms must hold results."""
    sid = store.upsert_study("s", "", {})
    trial = store.upsert_trial(sid, "h", {}, optuna_number=0)
    arms = {name: store.upsert_arm(trial, name, name, "cfg", 10, 40) for name in ("repetition", "oracle")}
    store.set_arm_result(arms["repetition"], final_val_loss=3.0, tokens_seen=40, effective_tokens=None,
                         effective_tokens_extrapolated=None, multiplier_vs_repetition=None)
    assert store.unfinished_arms(trial, ["repetition", "oracle"]) == ["oracle"]
    store.finish_trial(trial, "finished", objective_value=1.5)
    assert store.complete_trials("s", ["repetition", "oracle"]) == set()
    assert store.stored_result(trial, ["repetition", "oracle"]) == (False, [1.5])
    store.set_arm_result(arms["oracle"], final_val_loss=float("nan"), tokens_seen=40, effective_tokens=None,
                         effective_tokens_extrapolated=None, multiplier_vs_repetition=None)  # diverged, still a result
    assert store.complete_trials("s", ["repetition", "oracle"]) == {"h"}
    assert store.stored_result(trial, ["repetition", "oracle"]) == (True, [1.5])
    assert store.abandon_trial(trial) is False  # a finished row stays finished when its worker is found dead
    store.upsert_trial(sid, "h", {}, optuna_number=1)  # a retry is running again
    assert store.complete_trials("s", ["repetition", "oracle"]) == set()
    assert store.abandon_trial(trial) is True
    assert store.results("s")[0]["state"] == "failed"


def test_finished_arm_and_config_changes(store: Store) -> None:
    ids = populate(store)
    early, rep, oracle = ids["early"], ids["rep"], ids["oracle"]
    assert store.finished_arm(early, "repetition", "cfg-r")
    assert not store.finished_arm(early, "repetition", "cfg-other")
    assert not store.finished_arm(early, "oracle", "cfg-o")  # registered but still running
    assert not store.finished_arm(ids["late"], "repetition", "cfg-r")
    # Re-registering a finished arm with the same config must not throw its results away.
    assert store.upsert_arm(early, "repetition", "repetition", "cfg-r", BIG, 4 * BIG) == rep
    assert store.results("zeta")[0]["arms"]["repetition"]["final_val_loss"] == 3.5
    assert len(store.curves("zeta", "repetition")) == 2
    # A changed config starts the arm over and drops the curve of the old config.
    store.upsert_arm(early, "repetition", "repetition", "cfg-r2", BIG, 4 * BIG)
    arm = store.results("zeta")[0]["arms"]["repetition"]
    assert (arm["state"], arm["final_val_loss"], arm["effective_tokens"]) == ("running", None, None)
    assert not store.finished_arm(early, "repetition", "cfg-r")
    assert count(store, "evaluations") == 0
    store.set_arm_result(oracle, final_val_loss=3.0, tokens_seen=4 * BIG, effective_tokens=None,
                         effective_tokens_extrapolated=None, multiplier_vs_repetition=None, state="failed")
    assert not store.finished_arm(early, "oracle", "cfg-o")


# ---- reads --------------------------------------------------------------------------------------


def test_results_contract(store: Store) -> None:
    populate(store)
    results = store.results()
    assert [(r["study"], r["trial"]) for r in results] == [("alpha", 0), ("zeta", 0), ("zeta", 1)]
    no_stats = {"multiplier_ci": None, "n_seeds": 1, "multiplier_method": None, "multiplier_extrapolated": None,
                "final_accuracy": None, "effective_tokens_accuracy": None, "multiplier_accuracy": None,
                "effective_tokens_accuracy_extrapolated": None,
                "synthetic_share": None, "synthetic_tokens": None,  # rows stored without synthetic usage
                "gpu_hours": None, "cpu_core_hours": None,  # nor measured usage (synpro.ledger)
                "cost_per_m_effective_gained": None, "cost_unit": None}
    no_accuracy = {"final_accuracy": None, "effective_tokens_accuracy": None,
                   "effective_tokens_accuracy_extrapolated": None, "multiplier_accuracy": None,
                   "cost_per_m_effective_gained": None, "cost_unit": None}
    assert results[1] == {
        "study": "zeta", "trial": 0, "params_hash": "hash-a", "params": {"lr": 0.001}, "state": "finished",
        "objective_value": 3.5, "mlflow_run_id": "run-t0", "reference": None, "noise_floor": None,
        "usage": None, "arms": {
            "repetition": {"kind": "repetition", "state": "finished", "final_val_loss": 3.5,
                           "tokens_seen": 4 * BIG, "unique_tokens": BIG, "effective_tokens": float(BIG),
                           "effective_tokens_extrapolated": False, "multiplier_vs_repetition": 1.0,
                           "mlflow_run_id": "run-a0", **no_stats,
                           "per_seed": {"0": {"state": "finished", "final_val_loss": 3.5, "tokens_seen": 4 * BIG,
                                              "effective_tokens": float(BIG), "effective_tokens_extrapolated": False,
                                              "multiplier_vs_repetition": 1.0, "mlflow_run_id": "run-a0",
                                              **no_accuracy}}},
            "oracle": {"kind": "oracle", "state": "running", "final_val_loss": None, "tokens_seen": None,
                       "unique_tokens": 4 * BIG, "effective_tokens": None, "effective_tokens_extrapolated": None,
                       "multiplier_vs_repetition": None, "mlflow_run_id": None, **no_stats,
                       "per_seed": {"0": {"state": "running", "final_val_loss": None, "tokens_seen": None,
                                          "effective_tokens": None, "effective_tokens_extrapolated": None,
                                          "multiplier_vs_repetition": None, "mlflow_run_id": None,
                                          **no_accuracy}}}}}
    assert list(results[1]["arms"]) == ["repetition", "oracle"]  # registration order
    assert results[2]["arms"] == {} and results[2]["state"] == "running"
    assert store.results("zeta") == results[1:]
    with pytest.raises(InputError, match="no study named 'zet'") as info:
        store.results("zet")
    assert "alpha, zeta" in str(info.value)


def test_an_arm_has_a_row_per_seed_and_results_gather_them(store: Store) -> None:
    """Seeds are separate rows (trial, name, seed); results show their means, the trial analysis's
    interval and method, each seed's values with its details, and the reference and noise floor."""
    ids = populate(store)
    trial = ids["late"]
    arms = {seed: store.upsert_arm(trial, "synpro", "synpro", "cfg", BIG, 4 * BIG, seed=seed) for seed in (0, 1, 2)}
    assert len(set(arms.values())) == 3
    assert store.upsert_arm(trial, "synpro", "synpro", "cfg", BIG, 4 * BIG, seed=1) == arms[1]  # idempotent
    for seed, arm in arms.items():
        store.set_arm_result(arm, final_val_loss=3.0 + seed, tokens_seen=4 * BIG, effective_tokens=2.0 * BIG,
                             effective_tokens_extrapolated=seed == 2, multiplier_vs_repetition=1.5 + seed,
                             details={"multiplier_method": "tail-mean-k3", "epochs_per_source": {"organic": 4.0},
                                      "ratio": float("nan")})
    analysis = {"reference": {"kind": "trial", "arm": "oracle"}, "noise_floor": {"first_pass_calibration": {}},
                "arms": {"synpro": {"multiplier_vs_repetition": 2.4, "multiplier_ci": [1.2, 4.8], "n_seeds": 3,
                                    "multiplier_method": "tail-mean-k3 per seed, paired-t-log-ratio-95 over seeds",
                                    "multiplier_extrapolated": True, "per_seed": {"0": 1.5}}}}
    store.set_trial_analysis(trial, analysis)
    [result] = [t for t in store.results("zeta") if t["trial"] == 1]
    assert result["reference"] == {"kind": "trial", "arm": "oracle"}
    assert result["noise_floor"] == {"first_pass_calibration": {}}
    arm = result["arms"]["synpro"]
    assert arm["final_val_loss"] == pytest.approx(4.0) and arm["effective_tokens_extrapolated"] is True
    assert (arm["multiplier_vs_repetition"], arm["multiplier_ci"], arm["n_seeds"]) == (2.4, [1.2, 4.8], 3)
    assert arm["multiplier_method"].startswith("tail-mean-k3")
    assert list(arm["per_seed"]) == ["0", "1", "2"]
    assert arm["per_seed"]["2"]["multiplier_vs_repetition"] == 3.5
    assert arm["per_seed"]["0"]["epochs_per_source"] == {"organic": 4.0}
    assert arm["per_seed"]["0"]["ratio"] is None  # NaN in JSON details is stored as null
    [compared] = [c for c in store.compare("zeta") if c["arm"] == "synpro"]
    assert compared["n_trials"] == 1 and compared["n_seeds"] == 3


def test_results_is_a_single_query_at_any_size(store: Store) -> None:
    sid = store.upsert_study("s", "", {})
    for n in range(25):
        trial = store.upsert_trial(sid, f"h{n}", {"n": n}, optuna_number=n)
        for name in ("repetition", "oracle"):
            store.upsert_arm(trial, name, name, "cfg", BIG, BIG)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    results = store.results()
    assert len(results) == 25 and all(len(r["arms"]) == 2 for r in results)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_curves_and_studies(store: Store) -> None:
    ids = populate(store)
    store.add_evaluations(ids["oracle"], [{"tokens": BIG, "step": 10, "val_loss": 3.9, "effective_tokens": 2e10,
                                           "effective_tokens_extrapolated": True}])
    curves = store.curves("zeta")
    assert [(p["arm"], p["tokens"]) for p in curves] == [("repetition", BIG), ("repetition", 2 * BIG),
                                                         ("oracle", BIG)]
    assert curves[0] == {"trial": 0, "params_hash": "hash-a", "arm": "repetition", "seed": 0, "kind": "repetition",
                         "tokens": BIG, "step": 10, "val_loss": 4.0, "train_loss": 4.1, "effective_tokens": None,
                         "effective_tokens_extrapolated": None, "accuracy": None, "effective_tokens_accuracy": None,
                         "task_scores": None}
    assert store.curves("zeta", "oracle")[0]["effective_tokens_extrapolated"] is True
    assert store.curves("alpha") == []  # a study with no curve yet is not an error
    with pytest.raises(InputError, match="no arm named 'orcale'"):
        store.curves("zeta", "orcale")
    studies = store.studies()
    assert [(s["name"], s["n_trials"], s["n_finished"]) for s in studies] == [("alpha", 1, 0), ("zeta", 2, 1)]
    assert studies[0]["created_at"].endswith("+00:00")


def test_nan_is_null_and_infinity_is_kept_on_every_backend(store: Store) -> None:
    nan, inf = float("nan"), float("inf")
    sid = store.upsert_study("s", "", {})
    trial = store.upsert_trial(sid, "h", {}, optuna_number=0)
    arm = store.upsert_arm(trial, "repetition", "repetition", "cfg", BIG, BIG)
    store.add_evaluations(arm, [{"tokens": 1, "step": 1, "val_loss": nan, "effective_tokens": inf}])
    store.set_arm_result(arm, final_val_loss=nan, tokens_seen=BIG, effective_tokens=inf,
                         effective_tokens_extrapolated=True, multiplier_vs_repetition=nan)
    store.finish_trial(trial, "finished", objective_value=nan)
    [point] = store.curves("s")
    assert (point["val_loss"], point["effective_tokens"]) == (None, inf)
    [row] = store.results()
    arm_row = row["arms"]["repetition"]
    assert (row["objective_value"], arm_row["final_val_loss"], arm_row["effective_tokens"],
            arm_row["multiplier_vs_repetition"]) == (None, None, inf, None)


def test_a_multi_objective_study_keeps_every_value_and_marks_its_pareto_front(store: Store) -> None:
    objective = {"arm": "synpro", "metric": "multiplier_vs_repetition", "direction": "maximize",
                 "objectives": [{"arm": "synpro", "metric": "multiplier_vs_repetition", "direction": "maximize"},
                                {"arm": "synpro", "metric": "final_val_loss", "direction": "minimize"}]}
    sid = store.upsert_study("multi", "", objective)
    single = store.upsert_study("single", "", {"arm": "repetition", "metric": "final_val_loss",
                                               "direction": "minimize"})
    store.finish_trial(store.upsert_trial(single, "s", {}, optuna_number=0), "finished", objective_values=[2.0])
    values = {"a": [1.2, 3.0], "b": [1.5, 3.5], "c": [1.1, 3.2], "d": [float("nan"), 2.0], "e": [1.4, 2.9]}
    rows = {}
    for number, (name, told) in enumerate(values.items()):
        rows[name] = store.upsert_trial(sid, name, {"x": number}, optuna_number=number)
        store.finish_trial(rows[name], "finished", objective_values=told)
    running = store.upsert_trial(sid, "f", {"x": 9}, optuna_number=9)  # no values yet: never on the front
    found = {t["params_hash"]: t for t in store.results("multi")}
    assert found["a"]["objective_value"] == 1.2 and found["a"]["objective_values"] == [1.2, 3.0]
    assert found["d"]["objective_values"] == [None, 2.0]  # NaN is null, and such a trial is on no front
    # c is beaten by a on both; a by e on both; b (best multiplier) and e (best loss) remain.
    assert {h for h, t in found.items() if t["pareto_optimal"]} == {"b", "e"}
    assert found["f"]["objective_values"] is None and found["f"]["pareto_optimal"] is False
    assert store.stored_result(rows["a"], []) == (True, [1.2, 3.0])
    assert store.stored_result(rows["d"], []) == (True, None)  # NaN: nothing to tell Optuna
    assert store.stored_result(running, []) == (False, None)
    # A single-objective study reads as before: no per-objective keys.
    [trial] = store.results("single")
    assert trial["objective_value"] == 2.0 and "objective_values" not in trial and "pareto_optimal" not in trial
    # The best of a multi-objective study is the Pareto-optimal trial best on the primary objective.
    from store.store import best_trial

    assert best_trial(store.results("multi"), objective)["params_hash"] == "b"
    # A retry clears the previous attempt's values.
    store.upsert_trial(sid, "a", {"x": 0}, optuna_number=10)
    assert {t["params_hash"]: t for t in store.results("multi")}["a"]["objective_values"] is None


# ---- concurrency --------------------------------------------------------------------------------


def upsert_the_same_work(url: str, worker: int, start: Any) -> None:
    """A sweep worker process: opens the store and upserts the trial, arm and curve every worker shares."""
    start.wait()
    with Store(url) as store:
        for attempt in range(5):
            sid = store.upsert_study("s", "", {"arm": "oracle"})
            trial = store.upsert_trial(sid, "same", {"lr": 1}, optuna_number=worker * 5 + attempt)
            store.heartbeat(trial)
            arm = store.upsert_arm(trial, "repetition", "repetition", "cfg", BIG, BIG)
            points = [{"tokens": t, "step": t, "val_loss": 1.0 / t} for t in range(1, 40)]
            store.add_evaluations(arm, points if worker % 2 else points[::-1])


def test_parallel_workers_never_duplicate(url: str) -> None:
    """Worker processes open a brand-new store at the same moment and write the same rows."""
    context = multiprocessing.get_context("fork")  # children start in milliseconds, modules already imported
    workers = 3
    start = context.Barrier(workers)
    processes = [context.Process(target=upsert_the_same_work, args=(url, w, start)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * workers
    with Store(url) as store:
        assert (count(store, "studies"), count(store, "trials"), count(store, "arms"), count(store, "evaluations")) \
            == (1, 1, 1, 39)
        assert revision(store.engine) == HEAD


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    ("not a url", "malformed database URL 'not a url'"),
    ("mysql://u@h/db", "unsupported database 'mysql'"),
    ("sqlite://results.db", "needs three slashes"),
    ("sqlite:////proc/no/such/results.db", "cannot create the folder"),
    ("postgresql+psycopg2://u:hunter2@127.0.0.1/db", "no database driver"),
])
def test_bad_url_is_an_input_error(bad: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        Store(bad)
    assert "hunter2" not in str(info.value) and info.value.hint


def test_unreachable_server_is_an_input_error_with_the_password_masked() -> None:
    with pytest.raises(InputError) as info:
        Store("postgresql://root:hunter2@127.0.0.1:1/synpro")
    text = str(info.value)
    assert "postgresql://root:***@127.0.0.1:1/synpro" in text and "hunter2" not in text
    assert "server is running" in text


def test_unopenable_sqlite_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "results.db").mkdir()  # a folder where the database file should be
    with pytest.raises(InputError, match="cannot open the results store"):
        Store(f"sqlite:///{tmp_path / 'results.db'}")


def test_refresh_rounds_round_trip_with_their_grpo_curves(store: Store) -> None:
    sid = store.upsert_study("rounds", "experiment: {name: rounds}\n", {"arm": "synpro"})
    trial = store.upsert_trial(sid, "hash-r", {"lr": 0.1}, optuna_number=0)
    arm = store.upsert_arm(trial, "synpro", "synpro", "cfg", BIG, 4 * BIG)
    steps = [{"kind": "eval", "step": 0, "pass_rate": 0.25, "rewards": {"format": 0.5}, "failures": {"empty": 3}},
             {"kind": "train", "step": 1, "rewards/format/mean": 0.5, "rewards/format/std": float("nan"),
              "reward": 0.5, "kl": 0.0, "completions/mean_length": 12.0}]
    store.add_round(arm, 1, BIG, {"rephrase": steps[:1]})
    store.add_round(arm, 1, BIG, {"rephrase": steps, "reformat": steps[1:]})  # recorded again: replaced
    store.add_round(arm, 2, 2 * BIG, {})
    got = store.rounds("rounds")
    assert [(r["trial"], r["params_hash"], r["arm"], r["seed"], r["round"], r["start_tokens"]) for r in got] == [
        (0, "hash-r", "synpro", 0, 1, BIG), (0, "hash-r", "synpro", 0, 2, 2 * BIG)]
    nan_as_null = {**steps[1], "rewards/format/std": None}
    assert got[0]["grpo"] == {"rephrase": [steps[0], nan_as_null], "reformat": [nan_as_null]}
    assert count(store, "refresh_rounds") == 2
    store.upsert_arm(trial, "synpro", "synpro", "cfg-changed", BIG, 4 * BIG)  # another config: its rounds go
    assert store.rounds("rounds") == []
