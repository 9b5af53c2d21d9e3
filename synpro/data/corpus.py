"""Organic text in, one document at a time: the readers behind `corpus.source`.

Every reader streams, so memory stays flat whatever the corpus size; what to keep is the caller's call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from synpro.data.blocks import split_blocks
from synpro.errors import InputError
from synpro.spec import Spec

MAX_DOC_CHARS = 8000  # textdir files longer than this become several documents (paragraph blocks)
_SOURCE_KEY = {"builtin": "corpus.name", "jsonl": "corpus.path", "parquet": "corpus.path",
               "textdir": "corpus.path", "hf": "corpus.dataset"}
_FILE_SUFFIXES = {"jsonl": (".jsonl", ".json", ".jsonl.gz", ".json.gz"), "parquet": (".parquet",)}
_OFFLINE_HINT = ("offline machines can only load datasets already in the Hugging Face cache, "
                 "or folders written with Dataset.save_to_disk")


def iter_documents(spec: Spec) -> Iterator[str]:
    """The corpus's documents in corpus order, whitespace-stripped, each at least corpus.min_chars long.

    Raises InputError (naming the spec file and key) for a missing or unreadable source, a missing
    text field, or a corpus with no document left after the min_chars filter.
    """
    kept = seen = 0
    for text in _READERS[spec.corpus.source](spec):
        text = text.strip()
        seen += 1
        if text and len(text) >= spec.corpus.min_chars:
            kept += 1
            yield text
    if seen == 0:
        raise _error(spec, "the corpus holds no documents", _SOURCE_KEY[spec.corpus.source])
    if kept == 0:
        raise _error(spec, f"none of the corpus's {seen:,} documents has at least {spec.corpus.min_chars:,} "
                           "characters", "corpus.min_chars", hint="lower corpus.min_chars")


# ---- readers -----------------------------------------------------------------------------------

def _builtin(spec: Spec) -> Iterable[str]:
    from synpro.data.builtin import BUILTIN_CORPORA  # only a builtin source needs them

    name = spec.corpus.name or ""
    if name not in BUILTIN_CORPORA:
        raise _error(spec, f"no builtin corpus named {name!r}", "corpus.name",
                     hint=f"builtin corpora: {', '.join(BUILTIN_CORPORA.names())}")
    return BUILTIN_CORPORA.get(name)()


def _files(spec: Spec) -> Iterator[str]:
    """JSONL or Parquet: one file, or every such file in a folder, streamed through `datasets`."""
    import datasets

    path = _existing_path(spec)
    suffixes = _FILE_SUFFIXES[spec.corpus.source]
    files = sorted(p for p in path.rglob("*") if p.name.endswith(suffixes)) if path.is_dir() else [path]
    if not files:
        raise _error(spec, f"no {'/'.join(suffixes)} files in the folder {path}", "corpus.path")
    builder = "json" if spec.corpus.source == "jsonl" else "parquet"
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)
    except Exception as exc:  # noqa: BLE001 - whatever `datasets` raises, the file is the user's to fix
        raise _error(spec, f"cannot read {path}: {exc}", "corpus.path") from None
    yield from _texts(spec, dataset, "corpus.path")


def _textdir(spec: Spec) -> Iterator[str]:
    """Every *.txt / *.md file under the folder (sorted by path) is a document; long ones are split."""
    path = _existing_path(spec)
    if not path.is_dir():
        raise _error(spec, f"{path} is a file; a textdir corpus is a folder of .txt / .md files", "corpus.path")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file())
    if not files:
        raise _error(spec, f"no .txt or .md files under {path}", "corpus.path")
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise _error(spec, f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})", "corpus.path") from None
        yield from split_blocks(text, MAX_DOC_CHARS)


def _hf(spec: Spec) -> Iterator[str]:
    """A local `save_to_disk` folder, another local dataset folder, or a Hub id (from the HF cache offline)."""
    import datasets

    corpus = spec.corpus
    path = spec.corpus_path()
    try:
        if path is not None and path.is_dir() and _saved_to_disk(path):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if corpus.split not in dataset:
                    raise _error(spec, f"the dataset has no split {corpus.split!r}; it has "
                                       f"{', '.join(dataset)}", "corpus.split")
                dataset = dataset[corpus.split]
        elif path is not None and path.is_dir():
            dataset = datasets.load_dataset(str(path), corpus.config, split=corpus.split, streaming=True)
        else:  # a Hub id: the non-streaming load is the one that can answer from the local cache
            dataset = datasets.load_dataset(corpus.dataset, corpus.config, split=corpus.split)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure means the dataset reference is wrong or unavailable
        raise _error(spec, f"cannot load dataset {corpus.dataset!r}: {exc}", "corpus.dataset",
                     hint=_OFFLINE_HINT) from None
    yield from _texts(spec, dataset, "corpus.dataset")


def _saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


_READERS: dict[str, Callable[[Spec], Iterable[str]]] = {
    "builtin": _builtin, "jsonl": _files, "parquet": _files, "textdir": _textdir, "hf": _hf}


# ---- helpers -----------------------------------------------------------------------------------

def _texts(spec: Spec, rows: Iterable[dict[str, Any]], key: str) -> Iterator[str]:
    """The text field of each row; rows whose text is null are skipped."""
    field = spec.corpus.text_field
    try:
        for row in rows:
            if field not in row:
                raise _error(spec, f"the rows have no field {field!r}; they have: {', '.join(map(str, row))}",
                             "corpus.text_field")
            text = row[field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise _error(spec, f"field {field!r} holds {type(text).__name__} values, not text",
                             "corpus.text_field")
            yield text
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed row surfaces here, while streaming
        raise _error(spec, f"cannot read the corpus: {type(exc).__name__}: {exc}", key) from None


def _existing_path(spec: Spec) -> Path:
    path = spec.corpus_path()
    if path is None or not path.exists():
        raise _error(spec, f"no such file or folder: {path}", "corpus.path")
    return path


def _error(spec: Spec, message: str, key: str, hint: str | None = None) -> InputError:
    return InputError.one(message, file=spec.source_file, key=key, hint=hint)
