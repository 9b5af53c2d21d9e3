"""Token shards: a flat memory-mapped token stream plus document offsets and a small JSON header.

A shard is three files sharing a stem: `<stem>.bin` (tokens, uint16 or uint32, documents joined
with EOS), `<stem>.idx.npy` (int64 start offset of each document, plus the end) and
`<stem>.json` (header). Readers never load the whole stream into memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np


@dataclass(frozen=True)
class TokenShard:
    path: Path  # the stem; files are path.with_suffix(".bin" / ".idx.npy" / ".json")
    n_tokens: int
    n_docs: int
    dtype: str
    vocab_size: int
    name: str = ""

    @property
    def bin_path(self) -> Path:
        return self.path.with_suffix(".bin")

    @property
    def idx_path(self) -> Path:
        return self.path.with_suffix(".idx.npy")

    @property
    def header_path(self) -> Path:
        return self.path.with_suffix(".json")

    def tokens(self) -> np.memmap:
        if self.n_tokens == 0:
            return np.zeros(0, dtype=self.dtype)  # np.memmap refuses empty files
        return np.memmap(self.bin_path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    def offsets(self) -> np.ndarray:
        return np.load(self.idx_path)

    def documents(self) -> Iterator[np.ndarray]:
        tokens, offsets = self.tokens(), self.offsets()
        for start, end in zip(offsets[:-1], offsets[1:]):
            yield np.asarray(tokens[start:end])

    @classmethod
    def open(cls, path: str | Path) -> "TokenShard":
        path = Path(path)
        header = json.loads(path.with_suffix(".json").read_text())
        return cls(path=path, **{k: v for k, v in header.items() if k != "path"})


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def write_shard(path: str | Path, docs: Iterable[Iterable[int]], vocab_size: int, name: str = "") -> TokenShard:
    """Stream documents (token id lists, EOS already appended) into a shard, atomically.

    The header is written last, so a shard with a header is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    offsets = [0]
    tmp_bin = path.with_suffix(".bin.tmp")
    with open(tmp_bin, "wb") as f:
        for doc in docs:
            arr = np.asarray(list(doc) if not isinstance(doc, np.ndarray) else doc, dtype=dtype)
            f.write(arr.tobytes())
            offsets.append(offsets[-1] + len(arr))
    os.replace(tmp_bin, path.with_suffix(".bin"))
    np.save(path.with_suffix(".idx.npy"), np.asarray(offsets, dtype=np.int64))
    shard = TokenShard(path=path, n_tokens=offsets[-1], n_docs=len(offsets) - 1, dtype=dtype,
                       vocab_size=vocab_size, name=name or path.name)
    header = {k: v for k, v in asdict(shard).items() if k != "path"}
    tmp_header = path.with_suffix(".json.tmp")
    tmp_header.write_text(json.dumps(header, indent=1))
    os.replace(tmp_header, path.with_suffix(".json"))
    return shard
