"""The probe's reference task: prompt/response pairs, read from JSONL, an HF dataset, or built in.

The builtin set `python-c-docstrings` asks what a C-implemented Python function or method does and answers
with its docstring ("What does `math.gcd` do?" → "Greatest Common Divisor."). The builtin corpus
(`python-docs`) is the reference manual plus docstrings read from the standard library's *.py sources, so it
never sees a C docstring; any pair whose answer still shares a line with the corpus (a pure-Python twin such
as `_pyio`) is dropped, which makes the set disjoint from every pool carved from that corpus. It is built
on demand from the running interpreter and written once per Python version, as JSONL in SynPro's cache
(`ensure_builtin_reference`): parsing the standard library takes seconds, and every probe stage reads it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from synpro.core.fs import cache_root, write_atomic
from synpro.errors import InputError

if TYPE_CHECKING:
    from synpro.spec import ReferenceSpec

# Modules whose functions and classes are written in C (present in every CPython build).
C_MODULES = ("builtins", "math", "cmath", "itertools", "time", "sys", "gc", "marshal", "errno", "zlib",
             "binascii", "array", "unicodedata", "select", "posix", "_operator", "_functools", "_collections")
MIN_ANSWER_CHARS = 40
MIN_SHARED_LINE = 30  # a line this long that the corpus also has marks a pair as not disjoint


def builtin_pairs() -> list[dict[str, str]]:
    """Every (question, docstring) pair of the C modules, in a fixed order, minus any the corpus shares."""
    from synpro.data.builtin import python_docs

    corpus_lines = {_norm(line) for doc in python_docs() for line in doc.splitlines() if len(line.strip()) >= MIN_SHARED_LINE}
    pairs, seen = [], set()
    for qualname, doc in _c_docstrings():
        lines = [_norm(line) for line in doc.splitlines() if len(line.strip()) >= MIN_SHARED_LINE]
        if doc in seen or any(line in corpus_lines for line in lines):
            continue
        seen.add(doc)
        pairs.append({"prompt": f"What does `{qualname}` do?", "response": doc})
    return pairs


def ensure_builtin_reference(folder: Path, name: str = "python-c-docstrings") -> Path:
    """The builtin set as JSONL in folder (named for the interpreter version that made it), written once."""
    if name != "python-c-docstrings":
        raise InputError.one(f"unknown builtin reference set {name!r} (known: python-c-docstrings)",
                             key="probe.reference.name")
    path = Path(folder) / f"{name}-py{sys.version_info.major}.{sys.version_info.minor}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "".join(json.dumps(p) + "\n" for p in builtin_pairs()))
    return path


def load_reference(spec: "ReferenceSpec", *, base: Path | None = None) -> list[dict[str, str]]:
    """The pairs as [{"prompt", "response"}]; a missing field or an empty set is an InputError."""
    if spec.source == "builtin":
        rows, where = _read_jsonl(ensure_builtin_reference(cache_root() / "reference", spec.name)), "builtin"
        pf, rf = "prompt", "response"
    elif spec.source == "jsonl":
        path = Path(spec.path).expanduser()
        path = base / path if base and not path.is_absolute() else path
        rows, where, pf, rf = _read_jsonl(path), str(path), spec.prompt_field, spec.response_field
    else:
        rows, where, pf, rf = _read_hf(spec), spec.dataset, spec.prompt_field, spec.response_field
    pairs = []
    for i, row in enumerate(rows):
        for field, key in ((pf, "prompt_field"), (rf, "response_field")):
            if not isinstance(row.get(field), str):
                raise InputError.one(f"reference example {i + 1} of {where} has no text field {field!r} "
                                     f"(fields: {', '.join(map(str, row)) or 'none'})", key=f"probe.reference.{key}",
                                     hint=f"set probe.reference.{key} to the field that holds the "
                                          f"{key.split('_')[0]}")
        pairs.append({"prompt": row[pf], "response": row[rf]})
    if not pairs:
        raise InputError.one(f"the reference set {where} is empty", key="probe.reference")
    return pairs[:spec.max_examples] if spec.max_examples else pairs


def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError.one(f"cannot read the reference set {path}: {exc.strerror}", key="probe.reference.path") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError.one(f"not JSON: {exc.msg}", file=str(path), line=n) from None
    return rows


def _read_hf(spec: "ReferenceSpec") -> list[dict]:
    import datasets

    try:
        local = Path(spec.dataset).expanduser()
        data = (datasets.load_from_disk(str(local)) if local.is_dir() else datasets.load_dataset(spec.dataset, split=spec.split))
        if isinstance(data, datasets.DatasetDict):
            data = data[spec.split]
    except Exception as exc:  # noqa: BLE001 - offline hub, missing split, bad folder: all user-fixable
        raise InputError.one(f"cannot load the reference dataset {spec.dataset!r}: {exc}",
                             key="probe.reference.dataset",
                             hint="give a local dataset folder or a dataset already in the HF cache") from None
    return list(data)


def _c_docstrings() -> list[tuple[str, str]]:
    found = []
    for module_name in C_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        public = module_name.lstrip("_").replace("posix", "os")
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", module_name) not in (module_name, public, None):
                continue  # re-exported from elsewhere
            found += _answer(f"{public}.{name}" if public != "builtins" else name, obj)
            if inspect.isclass(obj):
                for attr, member in sorted(vars(obj).items()):
                    if not attr.startswith("_") and (inspect.ismethoddescriptor(member) or inspect.isbuiltin(member)):
                        found += _answer(f"{public + '.' if public != 'builtins' else ''}{name}.{attr}", member)
    return found


def _answer(qualname: str, obj: object) -> list[tuple[str, str]]:
    """The docstring without its signature lines ("gcd(*integers)\n--\n"), when it says enough."""
    doc = inspect.getdoc(obj) or ""
    if doc.startswith(qualname.rsplit(".", 1)[-1] + "("):
        doc = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
    doc = doc.strip()
    return [(qualname, doc)] if len(doc) >= MIN_ANSWER_CHARS else []


def _norm(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip().lower()
