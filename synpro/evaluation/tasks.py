"""Which evaluation tasks a spec may name, and the exact lm-eval config each one runs with.

A name is either a SynPro builtin (`BUILTIN_TASKS`: its data is written by SynPro from held-out
text, so it is always reachable) or a single task in lm-eval's own index. Refused, with the task
named and the reason:

- a name in neither (with the nearest known names as a hint);
- an lm-eval group or tag (`arc`, `ai2_arc`): each task reports one chosen metric, so list them;
- a task that is not multiple choice: SynPro scores zero-shot likelihood-ranked choices only;
- a task whose dataset cannot be reached: not in the local Hugging Face cache while offline
  (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), not on a reachable hub, or local files that are missing.

The config a task runs with is lm-eval's registered one with SynPro's choices laid over it: zero
shots and exactly the spec's metric (`acc` or `acc_norm`) — lm-eval's defaults would otherwise
decide both, and some tasks (CommonsenseQA, Social IQa) do not list `acc_norm` at all.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from synpro.core.fs import cache_root, file_lock, write_atomic
from synpro.core.hashing import stable_hash
from synpro.errors import InputError, Problem
from synpro.evaluation.base import BUILTIN_TASKS

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from synpro.spec import EvalTaskSpec, Spec

_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}  # datasets' packaged loaders of local files
OFFLINE_HINT = ("load each such dataset once on a machine with network access and copy its Hugging Face "
                "cache (~/.cache/huggingface) here, or remove the task from eval.tasks")


class _Refused(Exception):
    """One task cannot be used; the message says why."""


class _Unreachable(_Refused):
    """The task is fine but its dataset cannot be opened from here."""


def check_tasks(spec: "Spec") -> None:
    """Every eval task is known, multiple choice and has reachable data; else InputError (exit 2).

    Cheap: reads task configs and dataset metadata only, never a model. Builtin names pass at once
    (their data is made later, from the validation pool); lm-eval's index is built (~6 s) only
    when the spec names other tasks, and kept in SynPro's cache.
    """
    tasks = spec.eval.tasks
    problems, unreachable = [], False
    for i, task in enumerate(tasks):
        if task.name in BUILTIN_TASKS:
            continue
        try:
            _check_reachable(task.name, _registered_config(_lm_eval_index(), task.name))
        except _Refused as refused:
            problems.append(Problem(str(refused), f"eval.tasks.{i}.name"))  # synpro.resolve adds the line
            unreachable |= isinstance(refused, _Unreachable)
    if problems:
        raise InputError(problems, file=spec.source_file, hint=OFFLINE_HINT if unreachable else None)


def load_tasks(tasks: Sequence["EvalTaskSpec"], task_dir: str | Path | None) -> dict:
    """lm-eval's task dict (`TaskManager.load`) for these tasks, each with SynPro's settings.

    task_dir holds the builtin tasks' YAML and data (written by their builders); it is needed only
    when a builtin is listed. Raises InputError as `check_tasks` does.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False).load(task_configs(tasks, task_dir))


def task_configs(tasks: Sequence["EvalTaskSpec"], task_dir: str | Path | None) -> list[dict]:
    """One full lm-eval config dict per task: its registered YAML, zero-shot, the spec's metric."""
    builtin = [t.name for t in tasks if t.name in BUILTIN_TASKS]
    if builtin and (task_dir is None or not Path(task_dir).is_dir()):
        raise InputError.one(f"builtin task(s) {', '.join(builtin)} need the folder their builder wrote; "
                             f"got {task_dir!r}", key="eval.tasks")
    builtin_index = _builtin_index(task_dir) if builtin else None
    configs, problems, unreachable = [], [], False
    for i, task in enumerate(tasks):
        try:
            index = builtin_index if task.name in BUILTIN_TASKS else _lm_eval_index()
            config = _registered_config(index, task.name)
            _check_reachable(task.name, config)
        except _Refused as refused:
            problems.append(Problem(str(refused), f"eval.tasks.{i}.name"))
            unreachable |= isinstance(refused, _Unreachable)
            continue
        config["num_fewshot"] = 0
        config["metric_list"] = [{"metric": task.metric, "aggregation": "mean", "higher_is_better": True}]
        configs.append(config)
    if problems:
        raise InputError(problems, hint=OFFLINE_HINT if unreachable else None)
    return configs


@dataclass(frozen=True)
class _Index:
    """Task names in an lm-eval index: each one's kind (`TASK`, `GROUP`, `TAG`, ...) and YAML file."""

    entries: dict[str, tuple[str, str | None]]

    @classmethod
    def of(cls, manager: "TaskManager") -> "_Index":
        return cls({name: (entry.kind.name, entry.yaml_path and str(entry.yaml_path))
                    for name, entry in manager.task_index.items()})

    def single_tasks(self) -> list[str]:
        return sorted(name for name, (kind, _) in self.entries.items() if kind in ("TASK", "PY_TASK"))


@functools.cache
def _lm_eval_index() -> _Index:
    """lm-eval's index of its own tasks. Building it parses ~15k YAML files (~6 s), so it is kept in SynPro's
    cache, one file per lm-eval version and install folder, and built once per process at most."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = Path(lm_eval.__file__).parent / "tasks"
    cached = cache_root() / "lm-eval" / f"index-{lm_eval.__version__}-{stable_hash(str(folder))}.json"
    if (index := _read_index(cached)) is not None:
        return index
    with file_lock(cached.parent / f".{cached.name}.lock"):  # sweep workers starting together build it once
        if (index := _read_index(cached)) is None:
            index = _Index.of(TaskManager(include_defaults=True))
            write_atomic(cached, json.dumps(index.entries))
    return index


def _read_index(path: Path) -> _Index | None:
    """The cached index, or None where there is none yet or it cannot be read (it is then built again)."""
    try:
        return _Index({name: (kind, yaml_path) for name, (kind, yaml_path) in json.loads(path.read_text()).items()})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _builtin_index(task_dir: str | Path) -> _Index:
    """An index of the builtin tasks' YAML in task_dir only (fast)."""
    from lm_eval.tasks import TaskManager

    return _Index.of(TaskManager(include_path=str(task_dir), include_defaults=False))


def _registered_config(index: _Index, name: str) -> dict[str, Any]:
    """The task's full YAML config (includes merged, functions resolved), data paths made absolute."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = index.entries.get(name)
    if entry is None:
        if name in BUILTIN_TASKS:
            raise _Refused(f"builtin task {name!r} was not built (no {name}.yaml in the task folder)")
        near = difflib.get_close_matches(name, index.single_tasks(), n=3, cutoff=0.75)
        raise _Refused(f"unknown task {name!r}: neither a SynPro builtin ({', '.join(BUILTIN_TASKS.names())}) "
                       f"nor an lm-eval task" + (f"; did you mean {', '.join(near)}?" if near else ""))
    kind, yaml_path = entry
    if kind != "TASK":
        raise _Refused(f"{name!r} is an lm-eval {kind.lower()} of several tasks, or a Python "
                       "task without a YAML config; list single tasks, each with its metric")
    config = load_yaml(yaml_path, resolve_func=True)
    if config.get("output_type") != "multiple_choice":
        raise _Refused(f"task {name!r} is {config.get('output_type')!r}, not multiple_choice: SynPro scores "
                       "zero-shot likelihood-ranked choices only")
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if config.get("dataset_path") in _LOCAL_BUILDERS and files:
        anchor = Path(yaml_path).parent
        anchored = {split: str(anchor / path) for split, path in
                    (files.items() if isinstance(files, dict) else [("train", files)])}
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": anchored}
    return config


def _check_reachable(name: str, config: dict[str, Any]) -> None:
    """The task's dataset can be opened now (local files exist; hub data is cached or reachable)."""
    path, kwargs = config.get("dataset_path"), dict(config.get("dataset_kwargs") or {})
    if config.get("custom_dataset") is not None or path is None:
        return  # the task builds its own data
    if path in _LOCAL_BUILDERS:
        missing = [f for f in (kwargs.get("data_files") or {}).values() if not Path(f).exists()]
        if missing:
            raise _Unreachable(f"task {name!r}: its data file {missing[0]} does not exist")
        return
    if Path(path).expanduser().is_dir():
        return
    import datasets

    kwargs.pop("trust_remote_code", None)
    try:
        datasets.load_dataset_builder(path, config.get("dataset_name"), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to open the dataset means "unreachable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _Unreachable(f"task {name!r}: its dataset {path}"
                           f"{'/' + config['dataset_name'] if config.get('dataset_name') else ''} cannot be "
                           f"reached ({reason})") from None
