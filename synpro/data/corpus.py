"""Organic text in, one document at a time: the sources behind `corpus.source`.

Every source is a stream read once, front to back, never held whole: JSON lines (plain, `.gz`,
`.zst`) and Parquet files (one file, a folder, or a glob, in sorted order), folders of text files,
a Hugging Face dataset (a Hub id in streaming mode, a local dataset folder, a `save_to_disk`
folder) and the builtin corpora. What to keep is the caller's call.

A bad file is the user's to fix, so it is an InputError naming the file and, mid-stream, the line
(or Parquet row) where reading broke. `survey` answers validation's questions without reading a
corpus whole: is every file readable, and can the corpus hold the budget (measured on its first
documents, extrapolated from file sizes or dataset metadata beyond them).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from synpro.data.blocks import split_blocks
from synpro.errors import InputError
from synpro.spec import Spec

MAX_DOC_CHARS = 8000  # textdir files longer than this become several documents (paragraph blocks)
SURVEY_CHARS = 32 << 20  # validation reads at most this much text; beyond it, sizes are extrapolated
_READ = 1 << 16  # compressed bytes read at a time
SURVEY_FILES = 512  # validation opens at most this many files (evenly spread) to check they read
_SOURCE_KEY = {"builtin": "corpus.name", "jsonl": "corpus.path", "parquet": "corpus.path",
               "textdir": "corpus.path", "hf": "corpus.dataset"}
_FILE_SUFFIXES = {"jsonl": (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst"),
                  "parquet": (".parquet",), "textdir": (".txt", ".md")}
_OFFLINE_HINT = ("offline machines cannot stream from the Hub: give corpus.path local .jsonl(.gz/.zst) or "
                 ".parquet files, or corpus.dataset a local dataset folder (or one written with save_to_disk)")


def iter_documents(spec: Spec) -> Iterator[str]:
    """The corpus's documents in corpus order, whitespace-stripped, each at least corpus.min_chars long.

    Raises InputError (naming the spec file and key) for a missing or unreadable source, a missing
    text field, or a corpus with no document left after the min_chars filter.
    """
    yield from _filtered(spec, open_source(spec))


def _filtered(spec: Spec, source: "Source") -> Iterator[str]:
    kept = seen = 0
    for text in source.rows():
        text = text.strip()
        seen += 1
        if text and len(text) >= spec.corpus.min_chars:
            kept += 1
            yield text
    if seen == 0:
        raise _error(spec, "the corpus holds no documents", source.key)
    if kept == 0:
        raise _error(spec, f"none of the corpus's {seen:,} documents has at least {spec.corpus.min_chars:,} "
                           "characters", "corpus.min_chars", hint="lower corpus.min_chars")


@dataclass(frozen=True)
class Survey:
    """What validation learnt of a corpus: a bound on its tokens (UTF-8 bytes + one EOS a document),
    exact when `complete` (it was read to its end), else extrapolated, or None when nothing tells."""

    docs: int
    bound: int | None
    complete: bool
    how: str  # where the bound comes from, for messages


def survey(spec: Spec, need: int) -> Survey:
    """Check the corpus reads, and bound its size: read documents until `need` tokens are possible,
    the corpus ends, or SURVEY_CHARS were read; then extrapolate from the source's size."""
    source = open_source(spec)
    source.check()
    bound = docs = chars = 0
    for text in _filtered(spec, source):
        bound += len(text.encode()) + 1
        docs += 1
        chars += len(text)
        if bound >= need:
            return Survey(docs, bound, False, "its first documents")
        if chars >= SURVEY_CHARS:
            break
    else:
        return Survey(docs, bound, True, "all of it")
    total, read = source.total_bytes(), source.read_bytes
    if total is None or read <= 0:
        return Survey(docs, None, False, "unknown: the source does not tell its size")
    return Survey(docs, int(bound * total / read), False,
                  f"{read:,} of {total:,} bytes read, extrapolated from {source.size_of}")


def open_source(spec: Spec) -> "Source":
    return _SOURCES[spec.corpus.source](spec)


# ---- sources -----------------------------------------------------------------------------------

class Source:
    """A corpus as a stream: `rows()` yields its texts in corpus order (each call reads from the start)."""

    key = "corpus.path"
    size_of = "file sizes"

    def __init__(self, spec: Spec):
        self.spec = spec
        self.read_bytes = 0  # how much of total_bytes() the latest rows() has consumed

    def rows(self) -> Iterator[str]:
        raise NotImplementedError

    def check(self) -> None:
        """Cheap proof that the source reads (validation); rows() finds the rest while streaming."""

    def total_bytes(self) -> int | None:
        return None

    def error(self, message: str, key: str | None = None, hint: str | None = None) -> InputError:
        return _error(self.spec, message, key or self.key, hint)


class _Builtin(Source):
    key = "corpus.name"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        from synpro.data.builtin import BUILTIN_CORPORA  # only a builtin source needs them

        name = spec.corpus.name or ""
        if name not in BUILTIN_CORPORA:
            raise self.error(f"no builtin corpus named {name!r}",
                             hint=f"builtin corpora: {', '.join(BUILTIN_CORPORA.names())}")
        self._make = BUILTIN_CORPORA.get(name)

    def rows(self) -> Iterator[str]:
        yield from self._make()


class _Files(Source):
    """Files of one kind: corpus.path is a file, a folder (searched recursively) or a glob."""

    def __init__(self, spec: Spec):
        super().__init__(spec)
        suffixes = _FILE_SUFFIXES[spec.corpus.source]
        raw = spec.corpus.path or ""
        path = spec.corpus_path()
        if any(c in raw for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not files:
                raise self.error(f"no file matches {path}")
        elif path is None or not path.exists():
            raise self.error(f"no such file or folder: {path}")
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
            if not files:
                raise self.error(f"no {' or '.join(suffixes)} files under {path}")
        elif spec.corpus.source == "textdir":
            raise self.error(f"{path} is a file; a textdir corpus is a folder of .txt / .md files")
        else:
            files = [path]
        self.files = files
        self._done = 0  # bytes of the files rows() has finished

    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def rows(self) -> Iterator[str]:
        self.read_bytes = self._done = 0
        for file in self.files:
            yield from self._file_rows(file)
            self._done += file.stat().st_size
            self.read_bytes = self._done

    def check(self) -> None:
        step = max(1, len(self.files) // SURVEY_FILES)
        for file in self.files[::step]:
            for _ in self._file_rows(file, first_only=True):
                break

    def _file_rows(self, file: Path, first_only: bool = False) -> Iterator[str]:
        raise NotImplementedError


class _Jsonl(_Files):
    def _file_rows(self, file: Path, first_only: bool = False) -> Iterator[str]:
        line = 0
        try:
            with open(file, "rb") as raw:
                for line, data in enumerate(_decompressed(file, raw), 1):
                    if not data.strip():
                        continue
                    text = self._text(file, line, data)
                    if first_only:
                        yield text or ""
                        return
                    if text is not None:
                        self.read_bytes = self._done + raw.tell()
                        yield text
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable, or a corrupt .gz (zlib, EOFError) or .zst (ZstdError)
            where = f"after line {line}" if line else "at its start"
            raise self.error(f"cannot read {file} {where}: {_reason(exc)}",
                             hint="fix or remove the file (shards finished before it are kept)") from None

    def _text(self, file: Path, line: int, data: bytes) -> str | None:
        try:
            row = json.loads(data)
        except ValueError as exc:  # not JSON, or not UTF-8
            raise self.error(f"{file}, line {line}: not a JSON line ({_reason(exc)})",
                             hint="fix or remove the file (shards finished before it are kept)") from None
        if not isinstance(row, dict):
            raise self.error(f"{file}, line {line}: a JSON line must be an object, not {type(row).__name__}")
        return _text_of(self, row, f"{file}, line {line}")


class _Parquet(_Files):
    size_of = "the text column's size in the Parquet metadata"

    def total_bytes(self) -> int:
        """Uncompressed bytes of the text column (+ rows), from the footers only."""
        total = 0
        for file in self.files:
            meta = self._open(file).metadata
            column = meta.schema.to_arrow_schema().get_field_index(self.spec.corpus.text_field)
            total += sum(meta.row_group(g).column(column).total_uncompressed_size for g in range(meta.num_row_groups))
        return total

    def rows(self) -> Iterator[str]:
        self.read_bytes = 0
        for file in self.files:
            yield from self._file_rows(file)

    def _open(self, file: Path):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid etc.: not a readable Parquet file
            raise self.error(f"cannot read {file}: {_reason(exc)}", hint="fix or remove the file") from None
        names = parquet.schema_arrow.names
        if self.spec.corpus.text_field not in names:
            raise self.error(f"{file} has no column {self.spec.corpus.text_field!r}; it has: {', '.join(names)}",
                             "corpus.text_field")
        return parquet

    def _file_rows(self, file: Path, first_only: bool = False) -> Iterator[str]:
        parquet = self._open(file)
        meta = parquet.metadata
        column = parquet.schema_arrow.get_field_index(self.spec.corpus.text_field)
        row = 0
        try:
            for group in range(meta.num_row_groups):
                for batch in parquet.iter_batches(batch_size=1024, row_groups=[group],
                                                  columns=[self.spec.corpus.text_field]):
                    for text in batch.column(0).to_pylist():
                        row += 1
                        if text is not None and not isinstance(text, str):
                            raise self.error(f"{file}: column {self.spec.corpus.text_field!r} holds "
                                             f"{type(text).__name__} values, not text", "corpus.text_field")
                        if first_only:
                            yield text or ""
                            return
                        if text is not None:
                            yield text
                self.read_bytes += meta.row_group(group).column(column).total_uncompressed_size
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt page surfaces here, while streaming
            raise self.error(f"cannot read {file}, row {row + 1}: {_reason(exc)}",
                             hint="fix or remove the file (shards finished before it are kept)") from None


class _Textdir(_Files):
    """Every *.txt / *.md file under the folder (sorted by path) is a document; long ones are split."""

    def _file_rows(self, file: Path, first_only: bool = False) -> Iterator[str]:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise self.error(f"cannot read {file}: {_reason(exc)}") from None
        self.read_bytes = self._done + file.stat().st_size
        blocks = split_blocks(text, MAX_DOC_CHARS)
        yield from blocks[:1] if first_only else blocks


class _HF(Source):
    """A Hub id (streamed, never downloaded whole), a local dataset folder, or a `save_to_disk` folder."""

    key = "corpus.dataset"
    size_of = "the dataset's metadata"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self._dataset: Any = None

    def _load(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        import datasets

        corpus, path = self.spec.corpus, self.spec.corpus_path()
        try:
            if path is not None and path.is_dir() and _saved_to_disk(path):
                dataset = datasets.load_from_disk(str(path))  # memory-mapped Arrow: iterating it streams
                if isinstance(dataset, datasets.DatasetDict):
                    if corpus.split not in dataset:
                        raise self.error(f"the dataset has no split {corpus.split!r}; it has "
                                         f"{', '.join(dataset)}", "corpus.split")
                    dataset = dataset[corpus.split]
            else:
                name = str(path) if path is not None and path.is_dir() else corpus.dataset
                dataset = datasets.load_dataset(name, corpus.config, split=corpus.split, streaming=True)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure means the reference is wrong or unavailable
            raise self.error(f"cannot load dataset {corpus.dataset!r}: {_reason(exc)}", hint=_OFFLINE_HINT) from None
        self._dataset = dataset
        return dataset

    def check(self) -> None:
        for _ in self.rows():
            break

    def total_bytes(self) -> int | None:
        info = getattr(self._load(), "info", None)
        split = (info.splits or {}).get(self.spec.corpus.split) if info is not None else None
        return (split.num_bytes if split is not None and split.num_bytes else None) or \
            (info.dataset_size if info is not None and info.dataset_size else None)

    def rows(self) -> Iterator[str]:
        dataset = self._load()
        self.read_bytes = 0
        row = 0
        try:
            for row, record in enumerate(dataset, 1):
                text = _text_of(self, record, f"row {row}")
                if text is not None:
                    self.read_bytes += len(text.encode())
                    yield text
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed row or a lost connection, while streaming
            raise self.error(f"cannot read the dataset at row {row + 1}: {_reason(exc)}") from None


def _saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


_SOURCES: dict[str, Callable[[Spec], Source]] = {
    "builtin": _Builtin, "jsonl": _Jsonl, "parquet": _Parquet, "textdir": _Textdir, "hf": _HF}


# ---- helpers -----------------------------------------------------------------------------------

def _decompressed(file: Path, raw: io.BufferedReader) -> Iterable[bytes]:
    """The file's lines as bytes, decompressed by suffix (.gz, .zst) as they are read."""
    name = file.name.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".zst"):
        import zstandard

        # Small reads keep raw.tell() close to what was decoded (validation's size estimate).
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_READ, read_across_frames=True)
        return io.BufferedReader(reader, _READ)
    return raw


def _text_of(source: Source, row: dict[str, Any], where: str) -> str | None:
    """The text field of a row (None when null), or an InputError naming where the row is."""
    field = source.spec.corpus.text_field
    if field not in row:
        raise source.error(f"{where}: the rows have no field {field!r}; they have: {', '.join(map(str, row))}",
                           "corpus.text_field", hint="set corpus.text_field to the field that holds the text")
    text = row[field]
    if text is not None and not isinstance(text, str):
        raise source.error(f"{where}: field {field!r} holds {type(text).__name__} values, not text",
                           "corpus.text_field")
    return text


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(spec: Spec, message: str, key: str, hint: str | None = None) -> InputError:
    return InputError.one(message, file=spec.source_file, key=key, hint=hint)
