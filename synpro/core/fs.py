"""Files that are either whole or absent: the one atomic write, directory lock and atomic folder.

Everything SynPro commits (manifests, markers, checkpoints, configs) goes through these, so a kill
at any instant leaves either the old state or the new one, plus temp debris that the next run
removes (`clear_temp`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    """SynPro's per-user cache (converted generators, the empty MLflow schema): `SYNPRO_CACHE` or ~/.cache/synpro."""
    return Path(os.environ.get("SYNPRO_CACHE", Path.home() / ".cache" / "synpro")).expanduser()


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write to a temp file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` (created if needed); yields whether it is held (False only with
    wait=False). The kernel drops it when the holder dies, so a killed worker never blocks the rest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def dir_lock(path: str | Path) -> Iterator[None]:
    """One process works on the folder `path` at a time: the lock is `<parent>/.<name>.lock`, beside
    the folder, not in it, so deleting and rebuilding the folder is safe while holding it."""
    path = Path(path)
    with file_lock(path.parent / f".{path.name}.lock"):
        yield


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def link_tree(src: str | Path, dst: str | Path) -> None:
    """Copy a folder of finished files as hard links (a copy where links cannot be made), atomically:
    a snapshot of a checkpoint's model costs no disk until the checkpoint itself is deleted."""
    src = Path(src)
    with atomic_dir(dst) as tmp:
        for path in src.rglob("*"):
            target = tmp / path.relative_to(src)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def clear_temp(folder: str | Path) -> int:
    """Remove temp debris a killed run left directly in `folder`; returns how many entries went."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    gone = 0
    for entry in folder.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            gone += 1
    return gone


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file, by absolute path (the one place such URLs are built)."""
    return f"sqlite:///{Path(path).resolve()}"
