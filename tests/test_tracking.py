"""MLflow tracking: workers opening one new store at once, runs owned by processes, killed work ended
as KILLED, and nothing secret logged — on a real SQLite MLflow store."""

import os
import sqlite3
import subprocess
import sys
import socket

from synpro.sweep import local_owner_alive, owner_token
from synpro.tracking import OWNER_TAG, Tracker


def test_workers_opening_one_new_store_at_once_all_succeed(tmp_path):
    """Concurrent MLflow migrations of a fresh SQLite store used to fail with 'table ... already exists'
    (here with an empty cache, so they also race to build the schema template)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = f"from synpro.tracking import Tracker; t = Tracker({uri!r}, 'e'); print(t.experiment_id)"
    env = {**os.environ, "SYNPRO_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one experiment, found by the later two


def _schema(path) -> tuple[list, list]:
    """Every table, index and trigger with its definition's lines sorted (MLflow's own builds list a table's
    constraints in an order that changes from one build to the next), and the schema's Alembic version."""
    with sqlite3.connect(path) as db:
        rows = db.execute("select type, name, sql from sqlite_master order by type, name").fetchall()
        version = db.execute("select version_num from alembic_version").fetchall()
    return [(kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in rows], version


def test_a_store_copied_from_the_schema_template_is_the_one_mlflow_builds(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("SYNPRO_CACHE", str(tmp_path / "cache"))
    trackers = [Tracker(f"sqlite:///{tmp_path / name / 'mlflow.db'}", "e", tmp_path / name / "artifacts")
                for name in ("builds", "copies")]  # the first builds the template, the second copies it
    [template] = (tmp_path / "cache" / "mlflow-schema").glob("mlflow-*.db")
    MlflowClient(f"sqlite:///{tmp_path / 'plain.db'}").search_experiments()  # a store MLflow built itself
    assert _schema(tmp_path / "builds" / "mlflow.db") == _schema(tmp_path / "copies" / "mlflow.db") == \
        _schema(tmp_path / "plain.db") == _schema(template)
    for tracker in trackers:
        experiments = tracker.client.search_experiments(view_type=3)  # ViewType.ALL
        assert sorted((e.experiment_id, e.name, e.lifecycle_stage) for e in experiments) == \
            [("0", "Default", "deleted"), ("1", "e", "active")]
        tracker.finish(tracker.run("study", "s", {"synpro.study": "s"}))


def test_runs_of_a_dead_owner_end_killed_and_are_reused(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "e", tmp_path / "artifacts", owner=owner_token())
    study = tracker.run("study", "s", {"synpro.study": "s"})
    mine = tracker.run("trial", "t0", {"synpro.trial": "a"}, parent_id=study)
    dead = tracker.run("trial", "t1", {"synpro.trial": "b"}, parent_id=study)
    # A process on this host that is gone (no such pid).
    tracker.set_tags(dead, {OWNER_TAG: f"{socket.gethostname()}:999999999:1"})
    assert local_owner_alive(owner_token()) is True
    assert local_owner_alive(f"{socket.gethostname()}:999999999:1") is False
    assert local_owner_alive("another-host:1:1") is None

    assert tracker.end_orphans(lambda owner: bool(local_owner_alive(owner))) == 1
    status = {r: tracker.client.get_run(r).info.status for r in (study, mine, dead)}
    assert status == {study: "RUNNING", mine: "RUNNING", dead: "KILLED"}
    assert "gone" in tracker.client.get_run(dead).data.tags["synpro.end_reason"]
    # The retry of that trial finds the same run again, running under its new owner.
    assert tracker.run("trial", "t1", {"synpro.trial": "b"}, parent_id=study) == dead
    run = tracker.client.get_run(dead)
    assert run.info.status == "RUNNING" and run.data.tags[OWNER_TAG] == owner_token()


def test_nothing_secret_is_logged(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "e", tmp_path / "artifacts")
    run = tracker.run("study", "s", {"synpro.study": "s"})
    url = "postgresql+psycopg://root:hunter2-pw@db/x"
    tracker.log_params(run, {"store.url": url})
    tracker.log_text(run, f"store: {{url: {url}}}\n", "spec.yaml")
    tracker.log_dict(run, {"url": url}, "results.json")
    assert tracker.client.get_run(run).data.params["store.url"] == "postgresql+psycopg://root:***@db/x"
    for path in (tmp_path / "artifacts").rglob("*"):
        if path.is_file():
            assert b"hunter2-pw" not in path.read_bytes()
    assert b"hunter2-pw" not in (tmp_path / "mlflow.db").read_bytes()
