"""MLflow tracking: one run per study → trial → arm, found again by tags so a resume never forks runs.

Uses `MlflowClient` (explicit run ids) rather than the fluent API, because runs are created and
resumed across processes and nested three deep. Workers share the tracking store: opening it
(which creates or migrates its schema) and find-or-create of a run hold the store's lock, and each
run is tagged with the process that holds it (`synpro.owner`) so a later sweep can end the runs of
a killed process as KILLED instead of leaving them RUNNING. Everything logged passes through the
one masking function: no password or token reaches MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from store.locks import db_lock, sqlite_file
from synpro.core.fs import cache_root, dir_lock, write_atomic
from synpro.core.secrets import mask
from synpro.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEVEL_TAG = "synpro.level"
OWNER_TAG = "synpro.owner"
PARAM_VALUE_LIMIT = 6000
DEFAULT_EXPERIMENT_ID = "0"
SEP = " · "
# MLflow colours runs by a hash of their id, so arms often share one; this tag sets it. Matplotlib's tab10,
# as the PNG plots use.
RUN_COLOR_TAG = "mlflow.runColor"
RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf"]


def params_label(params: dict[str, Any]) -> str:
    """`lr=0.003 · seq_len=64`: a trial's searched params by their last dotted name (the full key where
    two share one), which is what tells its runs apart in MLflow's run lists and chart legends."""
    last = [key.rsplit(".", 1)[-1] for key in params]
    return SEP.join(f"{short if last.count(short) == 1 else key}={_short(value)}"
                    for (key, value), short in zip(params.items(), last))


def run_name(*parts: str | None) -> str:
    """Parts of a run's name joined by " · ", empty ones left out."""
    return SEP.join(p for p in parts if p)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Tracker:
    """Find-or-create runs and log to them idempotently (metric steps already logged are skipped)."""

    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None = None, owner: str | None = None):
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # table-creation chatter on every new store
        self.uri = uri
        self.owner = owner
        try:
            with db_lock(uri, "mlflow"):
                _new_sqlite_from_template(uri)
                self.client = MlflowClient(tracking_uri=uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is not None:
                    self.experiment_id = found.experiment_id
                else:
                    location = artifact_dir.resolve().as_uri() if artifact_dir else None
                    # Without this kind MLflow 3 opens the experiment in its GenAI view, hiding training runs.
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=location,
                        tags={"mlflow.experimentKind": "custom_model_development"})
                    self._drop_empty_default()
        except OSError:
            raise  # the machine's fault (a read-only or full disk), reported as such by the CLI
        except Exception as exc:  # noqa: BLE001 - any failure to reach the tracker is a config problem
            raise InputError.one(mask(f"cannot open the MLflow tracking store {uri!r}: {exc}"),
                                 key="tracking.mlflow_uri",
                                 hint="check the URI, or set tracking.enabled: false") from None

    def _drop_empty_default(self) -> None:
        """MLflow creates an empty "Default" experiment in every new store; a UI listing it beside the
        study only misleads, so it goes to the trash (MLflow never recreates it once any exists)."""
        with contextlib.suppress(Exception):  # another store's layout, or a server that refuses: harmless
            default = self.client.get_experiment(DEFAULT_EXPERIMENT_ID)
            if default.name == "Default" and not self.client.search_runs([DEFAULT_EXPERIMENT_ID], max_results=1):
                self.client.delete_experiment(DEFAULT_EXPERIMENT_ID)

    def run(self, level: str, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """The run at `level` carrying `tags`, created on first use (renamed to `name` if it had another
        name: run names follow the naming of the SynPro that last wrote); this process becomes its owner."""
        tags = {LEVEL_TAG: level, **tags}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        owner = {OWNER_TAG: self.owner} if self.owner else {}
        with db_lock(self.uri, "mlflow"):
            existing = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
            if existing:
                run_id = existing[0].info.run_id
                if existing[0].info.status != "RUNNING" or existing[0].info.run_name != name:
                    self.client.update_run(run_id, status="RUNNING", name=name)
                if owner:
                    self.set_tags(run_id, owner)
                return run_id
            if parent_id:
                tags["mlflow.parentRunId"] = parent_id
            return self.client.create_run(self.experiment_id, run_name=name, tags={**tags, **owner}).info.run_id

    def end_orphans(self, alive: Callable[[str], bool]) -> int:
        """End as KILLED every RUNNING trial or arm run whose owner is not `alive` (a killed process);
        returns how many. A study run is shared by all of a study's workers and left alone."""
        orphans = [run for run in self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                                          max_results=10_000)
                   if run.data.tags.get(LEVEL_TAG) != "study" and not alive(run.data.tags.get(OWNER_TAG, ""))]
        for run in orphans:
            self.set_tags(run.info.run_id, {"synpro.end_reason": f"owner {run.data.tags.get(OWNER_TAG)} is gone"})
            self.finish(run.info.run_id, "KILLED")
        return len(orphans)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(run_id).data.params
        new = [Param(k, mask(_param_value(v))) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, mask(str(v))) for k, v in tags.items()])

    def log_series(self, run_id: str, series: dict[str, Iterable[tuple[int, float]]],
                   values: dict[str, float] | None = None) -> None:
        """Log each key's (step, value) points, and `values` as scalars at step 0, skipping steps this run
        already has for the key, in one batch: a sweep logs hundreds of short series, and each MLflow write
        is a commit (an HTTP call on a server). Only keys the run already has are looked up step by step
        (a resumed run); nothing to log costs no call."""
        from mlflow.entities import Metric

        points = {key: [(int(s), v) for s, v in p if v is not None] for key, p in series.items()}
        points |= {key: [(0, value)] for key, value in (values or {}).items() if value is not None}
        points = {key: p for key, p in points.items() if p}
        if not points:
            return
        known = self.client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        new = []
        for key, pairs in points.items():
            have = {m.step for m in self.client.get_metric_history(run_id, key)} if key in known else set()
            new += [Metric(key, float(v), now, s) for s, v in pairs if s not in have]
        for i in range(0, len(new), 1000):
            self.client.log_batch(run_id, metrics=new[i:i + 1000])

    def log_points(self, run_id: str, key: str, points: Iterable[tuple[int, float]]) -> None:
        """Log (step, value) points whose step this run does not have yet for `key`."""
        self.log_series(run_id, {key: points})

    def log_values(self, run_id: str, values: dict[str, float]) -> None:
        """Scalars that describe a run as a whole (step 0), e.g. a synthetic set's metrics."""
        self.log_series(run_id, {}, values)

    def log_table(self, run_id: str, rows: list[dict[str, Any]], path: str) -> None:
        """Rows as an MLflow table artifact (shown side by side in the UI's artifact view)."""
        if rows:
            self.client.log_table(run_id, data={k: [r[k] for r in rows] for k in rows[0]}, artifact_file=path)

    def log_dict(self, run_id: str, obj: Any, path: str) -> None:
        self.log_text(run_id, json.dumps(obj, indent=2, default=str), path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, mask(text), path)

    def log_figure(self, run_id: str, figure: "Figure", path: str) -> None:
        self.client.log_figure(run_id, figure, path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _new_sqlite_from_template(uri: str) -> None:
    """Start a new SQLite tracking store as a copy of an empty one: MLflow builds a store by replaying
    every schema migration it ships (~1.4 s here, each new workdir), so that is done once per MLflow
    version, into SynPro's cache, and copied. The template holds no experiment: opening the copy, MLflow
    adds its "Default" one as it would in a store it built itself. A cache that cannot be written or
    read leaves the store for MLflow to build as before."""
    path = sqlite_file(uri)
    if path is None or path.exists():
        return
    import sqlite3

    import mlflow

    template = cache_root() / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"
    try:
        if not template.exists():
            with dir_lock(template):
                if not template.exists():
                    _build_template(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, template.read_bytes())
    except (OSError, sqlite3.Error):
        return


def _build_template(template: Path) -> None:
    """An MLflow store with its schema at MLflow's head and no experiment, written whole or not at all."""
    import sqlite3
    import tempfile

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.TemporaryDirectory() as folder:
        built = Path(folder) / "mlflow.db"
        SqlAlchemyStore(f"sqlite:///{built}", (Path(folder) / "artifacts").as_uri()).engine.dispose()
        with contextlib.closing(sqlite3.connect(built)) as db, db:
            db.execute("DELETE FROM experiment_tags")
            db.execute("DELETE FROM experiments")
        write_atomic(template, built.read_bytes())


class NullTracker(Tracker):
    """Tracking switched off (`tracking.enabled: false`): same calls, nothing recorded."""

    def __init__(self) -> None:
        self.uri = None
        self.owner = None

    def run(self, level: str, name: str, tags: dict[str, str], parent_id: str | None = None) -> str | None:
        return None

    def end_orphans(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def log_params(self, *args: Any, **kwargs: Any) -> None: ...
    def set_tags(self, *args: Any, **kwargs: Any) -> None: ...
    def log_series(self, *args: Any, **kwargs: Any) -> None: ...
    def log_table(self, *args: Any, **kwargs: Any) -> None: ...
    def log_dict(self, *args: Any, **kwargs: Any) -> None: ...
    def log_text(self, *args: Any, **kwargs: Any) -> None: ...
    def log_figure(self, *args: Any, **kwargs: Any) -> None: ...
    def finish(self, *args: Any, **kwargs: Any) -> None: ...


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
