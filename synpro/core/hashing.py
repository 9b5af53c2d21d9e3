"""The one stable hash: every key (stages, trials, search spaces, fits, caches) comes from here.

JSON with sorted keys and no whitespace, so a key never depends on dict order or formatting;
values JSON cannot express (paths, tuples) go through `str`. Files are hashed by content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

KEY_LENGTH = 16  # hex digits: 64 bits, no collision among the stages of any realistic study


def stable_hash(*parts: Any, length: int = KEY_LENGTH) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_digest(path: str | Path, length: int = 64) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:length]
