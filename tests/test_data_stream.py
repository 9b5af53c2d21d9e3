"""Pools from one stream (synpro.data.corpus / workers / shards / prepare): every file format read,
the same pools for any worker count, a killed stage resumed to the uninterrupted result, bad files
named, and memory that does not grow with the corpus. Real files, real processes, real kills."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pools import prepare_data
from synpro.data import corpus
from synpro.data.builtin import python_docs
from synpro.data.corpus import iter_documents, survey
from synpro.data.prepare import PROGRESS
from synpro.data.shards import TokenShard
from synpro.data.tokenizer import save_tokenizer, train_bpe
from synpro.errors import InputError
from synpro.spec import Spec
from synpro.stages import MANIFEST
from synpro.stages.graph import GraphBuilder
import warm_cli

TESTS = Path(__file__).parent
ORACLE = {"arms": [{"kind": "repetition"}, {"kind": "oracle"}], "search": {"objective": {"arm": "oracle"}}}


def write_jsonl(path: Path, texts: list[str], **row: Any) -> Path:
    """Texts as JSON lines, compressed by the name's suffix (.gz, .zst)."""
    data = "".join(json.dumps({"text": t, **row}) + "\n" for t in texts).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def make_spec(tmp_path: Path, corpus_: dict[str, Any], budget: dict[str, int], tokenizer: dict | None = None,
              **sections: Any) -> Spec:
    return Spec.model_validate({"experiment": {"name": "s", "seed": 5}, "corpus": corpus_,
                                "tokenizer": tokenizer or {"vocab_size": 512}, "budget": budget, **ORACLE,
                                **sections, "source_file": str(tmp_path / "spec.yaml")})


@pytest.fixture(scope="module")
def docs() -> tuple[str, ...]:
    return tuple(d for d in python_docs() if len(d) >= 200)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, docs) -> Path:
    """A pretrained tokenizer for the tests that do not test training (it takes seconds)."""
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_tokenizer(train_bpe(list(docs[:40]), 1024), folder)
    return folder


def stage_files(root: Path) -> dict[str, bytes]:
    """Every file the data stages wrote, by path under root (manifests without their timings and mtimes)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.endswith(".lock"):
            continue
        data = path.read_bytes()
        if path.name == MANIFEST:
            manifest = json.loads(data)
            data = json.dumps({"key": manifest["key"], "outputs": {n: e.get("sha256") for n, e in
                                                                   manifest["outputs"].items()}}).encode()
        files[path.relative_to(root).as_posix()] = data
    return files


# ---- formats -----------------------------------------------------------------------------------

def test_jsonl_gz_zst_parquet_globs_and_local_datasets_read_the_same_documents(tmp_path, docs, monkeypatch):
    texts = list(docs[:30])
    for name in ("c.jsonl", "c.jsonl.gz", "c.jsonl.zst"):
        write_jsonl(tmp_path / name, texts)
    pq.write_table(pa.table({"text": texts[:10]}), tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(pa.table({"text": texts[10:]}), tmp_path / "b.parquet", row_group_size=4)
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "part-0.jsonl.zst", texts[:12])
    write_jsonl(tmp_path / "shards" / "part-1.jsonl.gz", texts[12:])
    (tmp_path / "hub").mkdir()
    write_jsonl(tmp_path / "hub" / "train.jsonl", texts)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    budget = {"unique_tokens": 1000, "total_tokens": 2000, "validation_tokens": 50}
    sources = [{"source": "jsonl", "path": name} for name in ("c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "shards",
                                                              "shards/part-*")]
    sources += [{"source": "parquet", "path": "*.parquet"}, {"source": "hf", "dataset": "hub"}]
    for source in sources:
        assert list(iter_documents(make_spec(tmp_path, source, budget))) == texts, source
    # The Hub-style folder was streamed: nothing downloaded or converted into the datasets cache.
    assert not list((tmp_path / "hf-cache").rglob("*.arrow"))


def test_validation_reads_the_front_and_extrapolates_from_file_sizes(tmp_path, docs, monkeypatch):
    write_jsonl(tmp_path / "c.jsonl", list(docs[:200]))
    size = sum(len(t.encode()) + 1 for t in docs[:200])
    monkeypatch.setattr(corpus, "SURVEY_CHARS", 40_000)
    spec = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"},
                     {"unique_tokens": 1000, "total_tokens": 2000, "validation_tokens": 100})
    found = survey(spec, need=size // 2)  # more than the sample holds, half of what the file holds
    assert not found.complete and 0.8 * size < found.bound < 1.2 * size and "extrapolated" in found.how
    assert found.docs < 40  # it read the front only
    assert survey(spec, need=2 * size).bound < 2 * size

    from synpro.resolve import resolve

    too_big = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"},
                        {"unique_tokens": 1000, "total_tokens": 3 * size, "validation_tokens": 100})
    with pytest.raises(InputError) as caught:
        resolve(too_big)
    problem = next(p for p in caught.value.problems if p.key == "budget.total_tokens")
    assert "extrapolated" in problem.message and "too small" in problem.message


# ---- bad files ---------------------------------------------------------------------------------

def _validate(spec_path: Path) -> subprocess.CompletedProcess:
    return warm_cli.run([sys.executable, "-m", "cli", "validate", str(spec_path)], capture_output=True, text=True,
                          cwd=spec_path.parent, env={**os.environ, "SYNPRO_ERROR_LOG": str(spec_path.parent / "x.log")})


@pytest.mark.parametrize("name, content, key", [
    ("bad.jsonl.zst", b"this is not zstandard at all" * 10, "corpus.path"),
    ("bad.jsonl.gz", gzip.compress(json.dumps({"text": str(list(range(3000)))}).encode() + b"\n")[:500],
     "corpus.path"),  # cut inside its first line
    ("nofield.jsonl", b'{"body": "' + b"y" * 300 + b'"}\n', "corpus.text_field"),
])
def test_a_bad_file_is_exit_2_at_validation_naming_it(tmp_path, docs, name, content, key):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "good.jsonl", list(docs[:20]))
    (tmp_path / "data" / name).write_bytes(content)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("experiment: {name: v, workdir: out}\ncorpus: {source: jsonl, path: data}\n"
                         "budget: {unique_tokens: 200, total_tokens: 400, validation_tokens: 50}\n"
                         "arms: [{kind: repetition}]\nsearch: {objective: {arm: repetition}}\n")
    result = _validate(spec_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"[{key}]" in result.stderr and name in result.stderr and "Traceback" not in result.stderr


def test_a_corrupt_file_met_mid_stream_names_file_and_line_and_keeps_finished_shards(tmp_path, docs, tokenizer_dir):
    good = "".join(json.dumps({"text": t}) + "\n" for t in docs).encode()  # more than one batch of documents
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(good) + b"\x28\xb5\x2f\xfd garbage, not a frame" * 50)
    spec = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl.zst", "shard_tokens": 4096},
                     {"unique_tokens": 2_000_000, "total_tokens": 4_000_000, "validation_tokens": 2000},
                     tokenizer={"kind": "pretrained", "name": str(tokenizer_dir)})
    with pytest.raises(InputError) as caught:
        prepare_data(spec, tmp_path / "out")
    assert caught.value.problems[0].key == "corpus.path"
    message = str(caught.value)
    assert f"{path} after line " in message and int(message.split("after line ")[1].split(":")[0]) > len(docs) - 50
    [folder] = (tmp_path / "out").glob("pools-*")
    progress = json.loads((folder / PROGRESS).read_text())
    assert len(progress["pools"]["organic"]) >= 3 and not (folder / MANIFEST).exists()  # what was finished stays
    assert all((folder / f"{p['stem']}.json").exists() for p in progress["pools"]["organic"])


# ---- workers, shards, resume -------------------------------------------------------------------

BUDGET = {"unique_tokens": 60_000, "total_tokens": 150_000, "validation_tokens": 6_000}


def _stream_spec(corpus_dir: Path, **corpus_: Any) -> Spec:
    return make_spec(corpus_dir, {"source": "jsonl", "path": "c.jsonl.zst", "shard_tokens": 8192, **corpus_}, BUDGET)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, docs) -> tuple[Path, Path]:
    """(the corpus's folder, the uninterrupted build with one worker): a trained tokenizer, several
    shards a pool. Every build of these tests reads that one corpus file, so they share stage keys."""
    tmp = tmp_path_factory.mktemp("one")
    write_jsonl(tmp / "c.jsonl.zst", list(docs[:500]))
    prepare_data(_stream_spec(tmp, workers=1), tmp / "stages")
    return tmp, tmp / "stages"


def test_pools_are_identical_with_one_and_two_workers(one_worker, docs, tmp_path):
    corpus_dir, reference = one_worker
    two = _stream_spec(corpus_dir, workers=2)
    assert GraphBuilder(two, 1).pools.key == GraphBuilder(_stream_spec(corpus_dir, workers=1), 1).pools.key
    data = prepare_data(two, tmp_path / "stages")
    assert stage_files(tmp_path / "stages") == stage_files(reference)
    assert len(data.organic.parts) >= 7 and len(data.extra.parts) >= 10  # 8,192-token shards
    assert data.organic.n_tokens == BUDGET["unique_tokens"] and data.validation.n_tokens == BUDGET["validation_tokens"]
    # One stream across shards: every window the loader cuts reads the same as from one flat array.
    flat = np.concatenate([np.fromfile(s.bin_path, dtype=s.dtype) for s in data.extra.shards()])
    tokens = data.extra.tokens()
    assert len(tokens) == len(flat) and all(np.array_equal(tokens[i:i + 128], flat[i:i + 128])
                                            for i in range(0, len(flat) - 128, 997))
    assert [len(d) for d in data.extra.documents()] == np.diff(data.extra.offsets()).tolist()


def _killed(spec: Spec, root: Path, at: str) -> None:
    spec_file = root.with_name("spec.json")
    spec_file.write_text(json.dumps({**spec.to_dict(), "source_file": spec.source_file}))
    proc = subprocess.run([sys.executable, str(TESTS / "pools.py"), str(spec_file), str(root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SYNPRO_KILL_AT": at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_pools_or_extra_stage_resumes_to_the_uninterrupted_result(one_worker, docs, tmp_path, workers):
    corpus_dir, reference = one_worker
    spec = _stream_spec(corpus_dir, workers=workers)
    root = tmp_path / "stages"
    _killed(spec, root, "pools.shard:3")
    [pools] = root.glob("pools-*")
    kept = {p: p.stat().st_mtime_ns for p in (pools / "organic").glob("*.bin")}
    assert len(kept) == 3 and (pools / PROGRESS).exists() and not (pools / MANIFEST).exists()
    (pools / "organic" / "00003.bin").write_bytes(b"\1" * 999)  # a shard half-written when the power went
    (pools / "organic" / ".tmp-00004.bin").write_bytes(b"\2" * 99)

    _killed(spec, root, "extra.shard:4")  # the pools resume and finish; the extra stage dies in turn
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # only the missing shards were made
    [extra] = root.glob("extra-*")
    assert len(list((extra / "extra").glob("*.bin"))) == 4 and not (extra / MANIFEST).exists()

    prepare_data(spec, root)
    assert stage_files(root) == stage_files(reference)


# ---- memory ------------------------------------------------------------------------------------

def test_peak_memory_does_not_grow_with_the_corpus(tmp_path, docs, tokenizer_dir):
    """The benchmark's check at small scale: a corpus 5x bigger, read whole into the pools, costs the
    stage (one process: one worker) no more memory, beyond noise, than the smaller one (both hold
    several batches of documents, so every buffer has reached its size)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = list(docs[:300])
    tokens = sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    grew = {}
    for copies in (2, 10):
        folder = tmp_path / f"x{copies}"
        folder.mkdir()
        write_jsonl(folder / "c.jsonl.zst", texts * copies)
        total = int(0.95 * tokens * copies) // 2048 * 2048
        spec = make_spec(folder, {"source": "jsonl", "path": "c.jsonl.zst", "workers": 1},
                         {"unique_tokens": 20_000, "total_tokens": total, "validation_tokens": 2_000},
                         tokenizer={"kind": "pretrained", "name": str(tokenizer_dir)})
        (folder / "spec.json").write_text(json.dumps({**spec.to_dict(), "source_file": spec.source_file}))
        out = subprocess.run([sys.executable, str(TESTS / "pools.py"), str(folder / "spec.json"), str(folder / "st")],
                             capture_output=True, text=True, timeout=300, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        grew[copies] = rss["rss_kib_peak"] - rss["rss_kib_before"]
        [extra] = (folder / "st").glob("extra-*")
        assert TokenShard.open(extra / "extra").n_tokens > 0.8 * tokens * copies  # it did read it all
    # Holding the extra text would cost all of it (and its tokens more); measured: about 1.3 MB of 6 MB,
    # allocator noise over 5x as many batches.
    more_text_kib = sum(len(t.encode()) for t in texts) * 8 / 1024
    assert grew[10] - grew[2] < 0.5 * more_text_kib, (grew, more_text_kib)
