"""An on-disk cache of influence scores, keyed by (scorer key, text hash).

The scorer key names both checkpoints and the truncation length, so a score is reused only for exactly the
computation that made it. SQLite in WAL mode with a busy timeout: several processes on one machine (GRPO
workers, the scoring service) can share one file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from synpro.core.hashing import stable_hash


def text_hash(text: str) -> str:
    return stable_hash(text, length=32)


class ScoreCache:
    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS influence (key TEXT, text TEXT, base REAL, probe REAL, "
                       "PRIMARY KEY (key, text))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, hashes: Sequence[str]) -> dict[str, tuple[float, float]]:
        """(loss under θ, loss under θ′) of every cached hash."""
        found: dict[str, tuple[float, float]] = {}
        with self._connect() as db:
            for i in range(0, len(hashes), 500):
                part = list(hashes[i:i + 500])
                rows = db.execute(f"SELECT text, base, probe FROM influence WHERE key = ? AND text IN "
                                  f"({','.join('?' * len(part))})", [self.key, *part])
                found.update({h: (b, p) for h, b, p in rows})
        return found

    def put(self, rows: Iterable[tuple[str, float, float]]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO influence VALUES (?, ?, ?, ?)",
                           [(self.key, h, b, p) for h, b, p in rows])
