"""Token shards: flat memory-mapped token streams plus document offsets and a small JSON header.

A shard is three files sharing a stem: `<stem>.bin` (tokens, documents joined with EOS),
`<stem>.idx.npy` (int64 start offset of each document, plus the end) and `<stem>.json` (header).
Tokens are uint16 when every id of the vocabulary fits (half the disk and page cache), else uint32.
The header is written last, so a shard with a header is complete; `ShardWriter` appends documents
as they are made, so nothing of a shard is held in memory but its offsets.

A pool (organic, validation, extra) is a list of such shards, `<stem>/00000`, `<stem>/00001`, …,
each closed at a document boundary once it holds `shard_tokens` tokens, under a pool header
`<stem>.json` that lists them. A pool grows one complete shard at a time, which is what makes its
stage resumable; readers see one token stream either way (`TokenShard.tokens()` joins the parts).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from synpro.core.fs import TEMP_PREFIX, write_atomic


@dataclass(frozen=True)
class Part:
    """One complete shard of a pool: its stem relative to the pool's folder, and its sizes."""

    stem: str
    n_tokens: int
    n_docs: int


@dataclass(frozen=True)
class TokenShard:
    path: Path  # the stem; files are path.with_suffix(".bin" / ".idx.npy" / ".json")
    n_tokens: int
    n_docs: int
    dtype: str
    vocab_size: int
    name: str = ""
    parts: tuple[Part, ...] = ()  # a pool: its shards, in order (then there is no `<stem>.bin`)

    @property
    def bin_path(self) -> Path:
        return self.path.with_suffix(".bin")

    @property
    def idx_path(self) -> Path:
        return self.path.with_suffix(".idx.npy")

    @property
    def header_path(self) -> Path:
        return self.path.with_suffix(".json")

    def shards(self) -> list["TokenShard"]:
        """The single-file shards this stream is made of (itself, unless it is a pool)."""
        if not self.parts:
            return [self]
        return [TokenShard(self.path.parent / p.stem, p.n_tokens, p.n_docs, self.dtype, self.vocab_size, self.name)
                for p in self.parts]

    def tokens(self) -> "np.ndarray | JoinedTokens":
        """The whole token stream, memory-mapped (a pool of several shards joins their maps)."""
        if self.parts:
            maps = [s.tokens() for s in self.shards()]
            return maps[0] if len(maps) == 1 else JoinedTokens(maps)
        if self.n_tokens == 0:
            return np.zeros(0, dtype=self.dtype)  # np.memmap refuses empty files
        return np.memmap(self.bin_path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))

    def offsets(self) -> np.ndarray:
        """Document starts over the whole stream, plus its end (for a pool: O(documents) memory)."""
        if not self.parts:
            return np.load(self.idx_path)
        pieces, start = [np.zeros(1, dtype=np.int64)], 0
        for shard in self.shards():
            pieces.append(shard.offsets()[1:] + start)
            start += shard.n_tokens
        return np.concatenate(pieces)

    def documents(self) -> Iterator[np.ndarray]:
        for shard in self.shards():  # pool shards end at document boundaries
            tokens, offsets = shard.tokens(), shard.offsets()
            for start, end in zip(offsets[:-1], offsets[1:]):
                yield np.asarray(tokens[start:end])

    @classmethod
    def open(cls, path: str | Path) -> "TokenShard":
        path = Path(path)
        header = json.loads(path.with_suffix(".json").read_text())
        parts = tuple(Part(**p) for p in header.pop("parts", []))
        return cls(path=path, parts=parts, **{k: v for k, v in header.items() if k != "path"})


class JoinedTokens:
    """Several memory-mapped shards read as one stream: a slice inside one shard is that shard's
    memmap slice; only a slice across a boundary (one window per shard at most) is copied."""

    def __init__(self, maps: list[np.ndarray]):
        self._maps = maps
        self._starts = np.concatenate([[0], np.cumsum([len(m) for m in maps])]).astype(np.int64)
        self.dtype = maps[0].dtype

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a joined token stream takes contiguous slices only")
        start, stop, _ = key.indices(len(self))
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop - 1, side="right")) - 1
        pieces = [self._maps[i][max(start - self._starts[i], 0):stop - self._starts[i]] for i in range(first, last + 1)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self._maps)
        return whole if dtype is None else whole.astype(dtype)

    def max(self) -> int:
        return max(int(m.max()) for m in self._maps if len(m))


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


class ShardWriter:
    """One shard, written as documents arrive: tokens go straight to a temp `.bin`, and `close`
    renames it and writes the offsets and then the header (the mark of a complete shard)."""

    def __init__(self, path: str | Path, vocab_size: int, name: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.vocab_size, self.name = vocab_size, name or self.path.name
        self.dtype = token_dtype(vocab_size)
        self._tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}.bin")
        self._file = open(self._tmp, "wb")
        self._offsets = [0]

    @property
    def n_tokens(self) -> int:
        return self._offsets[-1]

    @property
    def n_docs(self) -> int:
        return len(self._offsets) - 1

    def add(self, doc: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(doc if isinstance(doc, np.ndarray) else list(doc), dtype=self.dtype)
        self._file.write(arr.tobytes())
        self._offsets.append(self._offsets[-1] + len(arr))

    def close(self) -> TokenShard:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path.with_suffix(".bin"))
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(self._offsets, dtype=np.int64))
        write_atomic(self.path.with_suffix(".idx.npy"), buffer.getvalue())
        shard = TokenShard(path=self.path, n_tokens=self.n_tokens, n_docs=self.n_docs, dtype=self.dtype,
                           vocab_size=self.vocab_size, name=self.name)
        write_atomic(self.path.with_suffix(".json"), json.dumps(_header(shard), indent=1))
        return shard

    def abandon(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_shard(path: str | Path, docs: Iterable[Iterable[int]], vocab_size: int, name: str = "") -> TokenShard:
    """Stream documents (token id lists, EOS already appended) into one shard, atomically."""
    writer = ShardWriter(path, vocab_size, name)
    for doc in docs:
        writer.add(doc)
    return writer.close()


class PoolWriter:
    """A pool growing one shard at a time under `<stem>/`; `parts` are the complete shards of an
    earlier, killed attempt, which it keeps (any later shard file there is half-done and goes)."""

    def __init__(self, stem: str | Path, vocab_size: int, name: str, parts: Iterable[Part] = ()):
        self.stem, self.vocab_size, self.name = Path(stem), vocab_size, name
        self.parts = list(parts)
        self.stem.mkdir(parents=True, exist_ok=True)
        keep = {p.stem for p in self.parts}
        for path in self.stem.iterdir():
            if f"{self.stem.name}/{path.name.split('.')[0]}" not in keep or path.name.startswith(TEMP_PREFIX):
                path.unlink()
        self._open: ShardWriter | None = None

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.parts) + (self._open.n_tokens if self._open else 0)

    @property
    def n_docs(self) -> int:
        return sum(p.n_docs for p in self.parts) + (self._open.n_docs if self._open else 0)

    @property
    def open_tokens(self) -> int:
        return self._open.n_tokens if self._open else 0

    def add(self, doc: np.ndarray) -> None:
        if self._open is None:
            self._open = ShardWriter(self.stem / f"{len(self.parts):05d}", self.vocab_size, self.name)
        self._open.add(doc)

    def cut(self) -> None:
        """Complete the open shard (if it holds anything): from now on it survives a kill."""
        if self._open is None:
            return
        shard = self._open.close()
        self._open = None
        self.parts.append(Part(f"{self.stem.name}/{shard.path.name}", shard.n_tokens, shard.n_docs))

    def finish(self) -> TokenShard:
        """Cut the last shard and write the pool header, which lists every shard (an empty pool has one
        empty shard, so every pool reads the same way)."""
        if not self.parts and self._open is None:
            self._open = ShardWriter(self.stem / "00000", self.vocab_size, self.name)
        self.cut()
        pool = TokenShard(path=self.stem, n_tokens=sum(p.n_tokens for p in self.parts),
                          n_docs=sum(p.n_docs for p in self.parts), dtype=token_dtype(self.vocab_size),
                          vocab_size=self.vocab_size, name=self.name, parts=tuple(self.parts))
        write_atomic(pool.header_path, json.dumps(_header(pool), indent=1))
        return pool

    def abandon(self) -> None:
        if self._open is not None:
            self._open.abandon()
            self._open = None


def _header(shard: TokenShard) -> dict:
    header = {k: v for k, v in asdict(shard).items() if k not in ("path", "parts")}
    if shard.parts:
        header["parts"] = [asdict(p) for p in shard.parts]
    return header
