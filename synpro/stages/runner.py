"""Run a graph of stages: each at most once, under a lock, resumable, complete only by its manifest.

One completion convention for every stage: `<folder>/_stage.json`, written last and atomically,
holding the key, the inputs' keys, the config, every output file's size and mtime (and sha256 up
to `HASH_LIMIT` bytes), the metrics, the timings and the usage (wall time x devices over every
attempt: synpro.stages.meter). A folder without it is unfinished work, which the stage resumes
(training, generation) or redoes. A folder whose files no longer match their manifest (a truncated
shard, a deleted checkpoint) is rebuilt, with a warning naming the files.

Loading a finished stage checks every file's size, always, and re-reads a file's content only when
its mtime is not the one recorded: a file rewritten in place (any write moves its mtime) is hashed
and found, while an untouched one costs a `stat`, so re-running a sweep over paper-scale pools (tens
of GB of shards) reads none of them. Each file is hashed once, when its stage finishes; a re-hash
that matches (a copied workdir, a `touch`) records the new mtime, so it happens once too.

Stages live in `<root>/<kind>-<key>/`; the lock is a sibling file, so two workers asking for one
stage run it once and the second one loads the result. Inside one process a lock per key does the
same for threads (`executor.parallel`): the second thread waits and takes the first one's output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from synpro.core.fs import clear_temp, dir_lock, write_atomic
from synpro.core.hashing import file_digest
from synpro.stages.base import Stage, StageContext
from synpro.stages.meter import Meter

log = logging.getLogger(__name__)

MANIFEST = "_stage.json"
HASH_LIMIT = 256 << 20  # bigger files (model weights at paper scale) are checked by size only


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn manifest cannot exist (atomic write); an edited one is not trusted


def is_done(stage: Stage, root: Path) -> bool:
    manifest = read_manifest(Path(root) / stage.dirname)
    return manifest is not None and manifest.get("key") == stage.key


def _outputs(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)  # e.g. .executor/
        if path.is_file() and path.name != MANIFEST and not hidden:
            size = path.stat().st_size
            entry: dict[str, Any] = {"size": size, "mtime_ns": path.stat().st_mtime_ns}
            if size <= HASH_LIMIT:
                entry["sha256"] = file_digest(path)
            files[path.relative_to(folder).as_posix()] = entry
    return files


def verify(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Output files that are missing or differ from what the manifest recorded: sizes always, content
    only where the mtime moved (then a matching file's new mtime goes into `manifest`)."""
    bad = []
    for name, entry in manifest.get("outputs", {}).items():
        path = folder / name
        stat = path.stat() if path.is_file() else None
        if stat is None or stat.st_size != entry["size"]:
            bad.append(name)
        elif entry.get("mtime_ns") == stat.st_mtime_ns:
            continue
        elif "sha256" in entry and file_digest(path) != entry["sha256"]:
            bad.append(name)
        else:
            entry["mtime_ns"] = stat.st_mtime_ns
    return bad


class Runner:
    """Runs stages under `root`, inputs first, each once per process (outputs are memoised by key)."""

    def __init__(self, root: Path, *, progress: bool = True,
                 on_start: Callable[[Stage], None] | None = None, executor: Any = None):
        self.root = Path(root)
        self.progress = progress
        self.on_start = on_start
        # Where a stage's work runs (synpro.executors); None: right here, as `stage.run(ctx)`.
        self.executor = executor
        self._outputs: dict[str, Any] = {}
        self._keys: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def folder(self, stage: Stage) -> Path:
        return self.root / stage.dirname

    def run(self, stage: Stage, callbacks: list[Any] | None = None) -> Any:
        if stage.key in self._outputs:
            return self._outputs[stage.key]
        with self._guard:
            key_lock = self._keys.setdefault(stage.key, threading.Lock())
        with key_lock:  # keys form a DAG (inputs are locked after, never before): no deadlock
            if stage.key in self._outputs:
                return self._outputs[stage.key]
            return self._run(stage, callbacks)

    def _run(self, stage: Stage, callbacks: list[Any] | None) -> Any:
        inputs = {name: self.run(upstream) for name, upstream in stage.inputs.items()}
        folder = self.folder(stage)
        if self.executor is not None and self.executor.remote(stage) and not is_done(stage, self.root):
            # Its own process (or Slurm job) runs it under this same protocol; we load what it left.
            self.executor.run_remote(self, stage, list(callbacks or []))
        with dir_lock(folder):
            manifest = read_manifest(folder)
            if manifest is not None and manifest.get("key") == stage.key:
                recorded = json.dumps(manifest.get("outputs"), sort_keys=True)
                bad = verify(folder, manifest)
                if not bad:
                    if json.dumps(manifest.get("outputs"), sort_keys=True) != recorded:  # re-hashed: trust the new mtimes
                        write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, default=str))
                    return self._keep(stage, stage.load(folder, inputs))
                log.warning("stage %s: %d output file(s) fail their integrity check (%s); rebuilding it",
                            folder, len(bad), ", ".join(bad[:5]))
                shutil.rmtree(folder)
            elif manifest is not None:  # someone else's folder under our name: never overwrite silently
                raise RuntimeError(f"{folder} holds a manifest for key {manifest.get('key')}, not {stage.key}")
            folder.mkdir(parents=True, exist_ok=True)
            clear_temp(folder)
            if self.on_start:
                self.on_start(stage)
            started = time.time()
            meter = Meter(folder, self.executor.resources(stage) if self.executor is not None else None)
            ctx = StageContext(folder, inputs, self.progress, list(callbacks or []))
            try:
                metrics = self.executor.launch(stage, ctx, self.root) if self.executor is not None else stage.run(ctx)
            except BaseException:
                meter.failed()
                raise
            finished = time.time()
            write_atomic(folder / MANIFEST, json.dumps({
                "kind": stage.kind, "version": stage.version, "key": stage.key, "label": stage.label,
                "config": stage.config, "inputs": {n: s.key for n, s in stage.inputs.items()},
                "outputs": _outputs(folder), "metrics": metrics or {},
                "timings": {"started": started, "finished": finished, "seconds": finished - started},
                "usage": meter.finished(),  # wall time x devices over every attempt; in no key
                "pid": os.getpid(),
            }, indent=1, default=str))
            return self._keep(stage, stage.load(folder, inputs))

    def _keep(self, stage: Stage, output: Any) -> Any:
        self._outputs[stage.key] = output
        return output
