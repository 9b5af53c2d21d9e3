"""Corpora that every Python install carries, so SynPro runs end to end on a fresh offline machine.

A builtin corpus is a function returning its documents in a fixed order (any iterable: a generator
lets a reader that stops early skip the rest); register more with `@BUILTIN_CORPORA.register("name")`.
Their content follows the running interpreter's version.
"""

from __future__ import annotations

import ast
import gc
import sysconfig
from pathlib import Path
from typing import Callable, Iterable, Iterator

from synpro.data.blocks import split_blocks
from synpro.registry import Registry

BUILTIN_CORPORA: Registry[Callable[[], Iterable[str]]] = Registry("builtin corpus")

DOC_CHARS = 4000  # documents are packed (or split) to about this size: a few hundred to ~1000 tokens
MIN_DOCSTRING_CHARS = 120  # shorter docstrings are one-liners ("Return self.") rather than prose
MIN_PROSE_SHARE = 0.65  # letters and spaces per character; below that a docstring is mostly code or tables
# Packages that are tests, generated tables (codecs, the topics dict itself) or vendored code.
SKIP_PARTS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__", "encodings",
                        "pydoc_data", "lib2to3"})


_whole: tuple[str, ...] | None = None  # python-docs once a reader has read it to its end (parsing takes seconds)


def python_docs() -> tuple[str, ...]:
    """CPython's reference-manual topics, then the standard library's docstrings grouped by module."""
    return tuple(stream_python_docs())


@BUILTIN_CORPORA.register("python-docs")
def stream_python_docs() -> Iterable[str]:
    """`python_docs`, parsed only as far as it is read until a reader has read it whole: every sweep's
    budget check needs only its first documents (the reference-manual topics, before any parsing)."""
    return _whole if _whole is not None else _read_and_keep()


def _read_and_keep() -> Iterator[str]:
    global _whole
    docs: list[str] = []
    for doc in _documents():
        docs.append(doc)
        yield doc
    _whole = tuple(docs)


def _documents() -> Iterator[str]:
    from pydoc_data.topics import topics  # a plain dict literal: importing it runs nothing else

    for name in sorted(topics):
        yield from split_blocks(topics[name].strip(), DOC_CHARS)
    seen: set[str] = set()  # the same docstring is often repeated (overrides, _pyio vs io); keep the first
    for module, path in _stdlib_sources():
        entries = []
        for qualname, doc in _docstrings(path, module):
            if doc not in seen and _is_prose(doc):
                seen.add(doc)
                entries.append(f"{qualname}\n\n{doc}")
        yield from _pack(entries, DOC_CHARS)


def _stdlib_sources() -> list[tuple[str, Path]]:
    """(dotted module name, source file) for the pure-Python standard library, sorted by module name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if SKIP_PARTS.isdisjoint(rel.parts):
            found.append((".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path))
    return sorted(found)


def _docstrings(path: Path, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) in source order, read with `ast`: importing modules has side effects."""
    # A parse allocates many nodes and no reference cycle: cycle collections it would trigger walk the
    # whole heap, which doubles the parse's time once torch and transformers are loaded (a cold sweep).
    collecting = gc.isenabled()
    gc.disable()
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # a few stdlib files are deliberately invalid or Python-2 only
        return
    finally:
        if collecting:
            gc.enable()
    yield from _walk(tree, module)


_Documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _walk(node: _Documented, qualname: str) -> Iterator[tuple[str, str]]:
    doc = ast.get_docstring(node)
    if doc:
        yield qualname, doc.strip()
    for child in node.body:
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(child, f"{qualname}.{child.name}")


def _is_prose(doc: str) -> bool:
    return len(doc) >= MIN_DOCSTRING_CHARS and sum(c.isalpha() or c == " " for c in doc) / len(doc) >= MIN_PROSE_SHARE


def _pack(entries: list[str], max_chars: int) -> list[str]:
    """Consecutive entries joined into documents of at most max_chars; a longer entry is split alone."""
    docs: list[str] = []
    current: list[str] = []
    for entry in entries:
        if current and sum(map(len, current)) + 2 * len(current) + len(entry) > max_chars:
            docs.append("\n\n".join(current))
            current = []
        if len(entry) > max_chars:
            docs.extend(split_blocks(entry, max_chars))
        else:
            current.append(entry)
    if current:
        docs.append("\n\n".join(current))
    return docs
