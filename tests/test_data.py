"""Corpus readers, the builtin corpus, the tokenizer and the carved pools, on real (small) files."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from synpro.data import builtin
from synpro.data.builtin import python_docs, stream_python_docs
from synpro.data.blocks import split_blocks
from synpro.data.corpus import MAX_DOC_CHARS, iter_documents
from pools import prepare_data
from synpro.data.prepare import PreparedData, load_pools
from synpro.stages import MANIFEST
from synpro.errors import InputError
from synpro.spec import Spec

U, T, V = 20_000, 60_000, 5_000
BUDGET = {"unique_tokens": U, "total_tokens": T, "validation_tokens": V}


def make_spec(tmp_path: Path, corpus: dict[str, Any] | None = None, budget: dict[str, Any] = BUDGET,
              **sections: Any) -> Spec:
    data = {"experiment": {"name": "t", "seed": 3}, "tokenizer": {"vocab_size": 512}, "budget": budget,
            **sections, "source_file": str(tmp_path / "spec.yaml")}
    if corpus is not None:
        data["corpus"] = corpus
    return Spec.model_validate(data)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def input_error(spec: Spec, call=lambda s: list(iter_documents(s))) -> InputError:
    with pytest.raises(InputError) as caught:
        call(spec)
    assert caught.value.file == spec.source_file
    return caught.value


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Spec, PreparedData]:
    """The default corpus and arms (repetition + oracle), prepared once for the module."""
    tmp = tmp_path_factory.mktemp("prepared")
    spec = make_spec(tmp)
    return spec, prepare_data(spec, tmp / "data", progress=False)


def decoded_docs(data: PreparedData, shard) -> list[str]:
    """Texts of a shard's complete documents (the last one may be cut, so it is left out)."""
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    docs = list(shard.documents())[:-1]
    assert all(doc[-1] == data.vocab.eos_id for doc in docs)
    return [tokenizer.decode(doc[:-1].tolist()) for doc in docs]


# ---- builtin corpus ----------------------------------------------------------------------------

def test_builtin_corpus_is_large_prose_in_a_fixed_order():
    docs = python_docs()
    assert len(docs) > 500 and sum(map(len, docs)) > 1_500_000
    assert max(map(len, docs)) <= 4000
    assert any(d.startswith('The "assert" statement') for d in docs)  # a reference-manual topic
    assert any(d.startswith("json.dump\n\nSerialize") and "\n\njson.dumps\n\nSerialize" in d
               for d in docs)  # the stdlib's docstrings, grouped by module
    # Same documents in another interpreter with another hash seed (set/dict order must not leak in).
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()
    code = ("import hashlib; from synpro.data.builtin import python_docs; "
            "print(hashlib.sha256('\\0'.join(python_docs()).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == digest


def test_builtin_corpus_streams_the_same_documents_parsing_only_what_is_read(monkeypatch):
    monkeypatch.setattr(builtin, "_whole", None)  # as in a fresh process
    stream = stream_python_docs()
    assert not isinstance(stream, tuple)  # produced as read: a reader that stops early parses no further
    first = list(itertools.islice(stream, 3))
    whole = tuple(first + list(stream))
    assert stream_python_docs() is python_docs()  # read whole once, every reader shares the one tuple
    assert whole == python_docs()


def test_unknown_builtin_names_the_key(tmp_path):
    error = input_error(make_spec(tmp_path, {"source": "builtin", "name": "nope"}))
    assert error.problems[0].key == "corpus.name" and "python-docs" in error.hint


# ---- readers -----------------------------------------------------------------------------------

def test_jsonl_reader_uses_the_text_field_and_min_chars(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"body": "a" * 50}, {"body": None}, {"body": "  " + "b" * 300 + "\n"},
                                       {"body": "c" * 200}])
    spec = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl", "text_field": "body"})
    assert list(iter_documents(spec)) == ["b" * 300, "c" * 200]


def test_jsonl_missing_field_lists_the_fields(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"body": "x" * 300, "url": "u"}])
    error = input_error(make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"}))
    assert error.problems[0].key == "corpus.text_field"
    assert "'text'" in str(error) and "body, url" in str(error)


def test_missing_file_names_the_key_and_spec_file(tmp_path):
    error = input_error(make_spec(tmp_path, {"source": "jsonl", "path": "nowhere.jsonl"}))
    assert error.problems[0].key == "corpus.path"
    assert str(error).startswith(f"{tmp_path / 'spec.yaml'} [corpus.path]: no such file")


def test_malformed_jsonl_is_an_input_error(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "' + "x" * 300 + '"}\nnot json\n')
    error = input_error(make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"}))
    assert error.problems[0].key == "corpus.path"


def test_corpus_emptied_by_min_chars(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "short"}] * 3)
    error = input_error(make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"}))
    assert error.problems[0].key == "corpus.min_chars" and "3 documents" in str(error)


def test_parquet_reader_reads_a_folder_of_files_in_order(tmp_path):
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": ["2" * 250]}), tmp_path / "pq" / "b.parquet")
    pq.write_table(pa.table({"text": ["1" * 250, "1" * 260]}), tmp_path / "pq" / "a.parquet")
    spec = make_spec(tmp_path, {"source": "parquet", "path": "pq"})
    assert list(iter_documents(spec)) == ["1" * 250, "1" * 260, "2" * 250]


def test_textdir_reads_txt_and_md_and_splits_big_files(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("Alpha " * 50)
    (root / "sub" / "b.md").write_text("# Beta\n\n" + "beta " * 60)
    (root / "skip.py").write_text("x = 1  # " + "not a document " * 30)
    paragraphs = [f"Paragraph {i}." + " word" * 200 for i in range(60)]
    (root / "sub" / "big.txt").write_text("\n\n".join(paragraphs))
    docs = list(iter_documents(make_spec(tmp_path, {"source": "textdir", "path": "texts"})))
    assert docs[0] == ("Alpha " * 50).strip() and docs[1].startswith("# Beta")  # sorted by path
    big = docs[2:]
    assert len(big) > 1 and all(len(d) <= MAX_DOC_CHARS for d in big)
    assert "\n\n".join(big) == "\n\n".join(paragraphs).strip()  # cut only at paragraph breaks


def test_textdir_needs_a_folder_with_text(tmp_path):
    (tmp_path / "empty").mkdir()
    error = input_error(make_spec(tmp_path, {"source": "textdir", "path": "empty"}))
    assert error.problems[0].key == "corpus.path" and "no .txt or .md files" in str(error)


def test_split_blocks_falls_back_to_lines_then_spaces():
    text = "\n".join(["line " * 30] * 10) + "\n\n" + "word " * 400
    blocks = split_blocks(text, 500)
    assert all(0 < len(b) <= 500 for b in blocks)
    assert " ".join(" ".join(blocks).split()) == " ".join(text.split())


def test_hf_reader_loads_save_to_disk_folders(tmp_path):
    rows = {"text": ["first " * 50, "second " * 50], "n": [1, 2]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["train " * 50]}),
                          "test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dict"))
    single = make_spec(tmp_path, {"source": "hf", "dataset": "single"})
    assert list(iter_documents(single)) == [t.strip() for t in rows["text"]]
    test_split = make_spec(tmp_path, {"source": "hf", "dataset": "dict", "split": "test"})
    assert len(list(iter_documents(test_split))) == 2
    error = input_error(make_spec(tmp_path, {"source": "hf", "dataset": "dict", "split": "validation"}))
    assert error.problems[0].key == "corpus.split" and "train, test" in str(error)


def test_hf_dataset_not_available_offline(tmp_path):
    error = input_error(make_spec(tmp_path, {"source": "hf", "dataset": "nobody/no-such-dataset"}))
    assert error.problems[0].key == "corpus.dataset" and "no-such-dataset" in str(error)


# ---- prepared pools ----------------------------------------------------------------------------

def test_pools_are_exact_sized(prepared):
    spec, data = prepared
    # The extra pool fills exactly the training windows the oracle needs beyond organic's whole windows.
    batch, seq = spec.training.batch_size, spec.training.seq_len
    steps = -(-T // (batch * seq))
    assert data.extra.n_tokens == (steps * batch - U // seq) * seq >= T - U
    assert (data.organic.n_tokens, data.validation.n_tokens) == (U, V)
    for shard in (data.organic, data.extra, data.validation):
        assert len(shard.tokens()) == shard.n_tokens == shard.offsets()[-1]
        assert shard.tokens().max() < data.vocab.size
    pools = data.stats["pools"]
    assert {name: pools[name]["tokens"] for name in pools} == {"organic": U, "validation": V}


def test_the_oracle_sees_every_token_once_and_repetition_makes_t_over_u_passes(prepared, tmp_path):
    """Trained to T as asked: the trainer's whole steps are the resolved T, which the pools fill exactly."""
    from synpro.training import train

    spec, data = prepared
    budget = spec.resolved_budget()
    assert budget.extra == data.extra.n_tokens and budget.total == 30 * 16 * 128 and budget.unique == U
    training = spec.training.model_copy(update={"eval_interval_tokens": budget.total})
    seen = {name: train(model=spec.model, training=training, vocab=data.vocab, sources=sources, total_tokens=T,
                        validation=data.validation, out_dir=tmp_path / name, seed=0, progress=False)
            for name, sources in {"oracle": [data.organic, data.extra], "repetition": [data.organic]}.items()}
    assert seen["oracle"].tokens_seen == seen["repetition"].tokens_seen == budget.total
    assert seen["oracle"].epochs_per_source == {"organic": 1.0, "extra": 1.0}  # never a repeated token
    passes = seen["repetition"].epochs_per_source["organic"]
    assert passes == budget.epochs
    assert abs(passes - T / U) <= training.tokens_per_step / U  # the asked T/U, within one batch


def test_pools_are_disjoint(prepared):
    _, data = prepared
    organic = decoded_docs(data, data.organic)
    validation = decoded_docs(data, data.validation)
    extra = decoded_docs(data, data.extra)
    corpus = set(python_docs())
    assert set(organic) <= corpus and set(validation) <= corpus and set(extra) <= corpus
    assert len(organic) >= 5 and len(validation) >= 1 and len(extra) >= 5
    assert not set(validation) & set(organic) and not set(validation) & set(extra)
    assert not set(organic) & set(extra)


def test_organic_docs_are_the_organic_shard(prepared):
    _, data = prepared
    rows = [json.loads(line) for line in data.organic_docs.read_text().splitlines()]
    assert len(rows) == data.organic.n_docs
    assert [r["n_tokens"] for r in rows] == np.diff(data.organic.offsets()).tolist()
    assert sum(r["n_tokens"] for r in rows) == U
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    docs = list(data.organic.documents())
    for row, doc in zip(rows, docs):  # every text re-encodes to its shard document (EOS aside)
        content = doc[:-1] if doc[-1] == data.vocab.eos_id else doc
        assert tokenizer(row["text"], add_special_tokens=False)["input_ids"] == content.tolist()
    assert len({r["id"] for r in rows}) == len(rows)


def test_tokenizer_was_trained_on_organic_text_only(prepared):
    _, data = prepared
    train_docs = data.stats["tokenizer"]["train_docs"]
    assert 0 < train_docs <= data.stats["pools"]["organic"]["docs"]


def test_tokenizer_folder_loads_and_round_trips(prepared):
    _, data = prepared
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert len(tokenizer) == data.vocab.size == 512
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) == (
        data.vocab.eos_id, data.vocab.bos_id, data.vocab.pad_id)
    text = "Return the   naïve value\n\tof x — or 🙂 None."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and data.vocab.eos_id not in ids


def test_rerun_is_a_no_op(prepared, tmp_path):
    spec, data = prepared
    root = data.tokenizer_dir.parent.parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if not p.name.endswith(".lock")}
    again = prepare_data(spec, root)
    assert again == data and load_pools(data.tokenizer_dir.parent) == replace(data, extra=None)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if not p.name.endswith(".lock")} == before


def test_half_written_or_truncated_pools_are_redone(prepared, tmp_path):
    spec, data = prepared
    first = prepare_data(spec, tmp_path)
    folder = first.tokenizer_dir.parent
    (folder / MANIFEST).unlink()  # as if killed before the stage finished
    first.organic.shards()[0].bin_path.write_bytes(b"\0" * 10)
    again = prepare_data(spec, tmp_path)
    assert (folder / MANIFEST).exists() and again.organic.n_tokens == U
    assert np.array_equal(again.organic.tokens(), data.organic.tokens())  # and it is deterministic
    assert np.array_equal(again.validation.tokens(), data.validation.tokens())
    with open(again.organic.shards()[-1].bin_path, "r+b") as f:  # a finished stage whose shard lost its tail
        f.truncate(100)
    rebuilt = prepare_data(spec, tmp_path)
    assert np.array_equal(rebuilt.organic.tokens(), data.organic.tokens())


def test_extra_pool_is_disjoint_from_organic_and_validation(prepared):
    _, data = prepared
    organic, validation, extra = (set(decoded_docs(data, s)) for s in (data.organic, data.validation, data.extra))
    assert extra and not extra & organic and not extra & validation


def test_too_small_corpus_says_what_exists_and_what_is_needed(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in python_docs()[:12]])
    corpus = {"source": "jsonl", "path": "c.jsonl"}
    spec = make_spec(tmp_path, corpus, budget={**BUDGET, "unique_tokens": 40_000})
    error = input_error(spec, lambda s: prepare_data(s, tmp_path / "out"))
    have = error.details["have_tokens"]
    assert 0 < have < 40_000 + V == error.details["need_tokens"]
    assert error.problems[0].key == "budget.unique_tokens" and f"{have:,} tokens" in str(error)
    assert not list((tmp_path / "out").glob(f"*/{MANIFEST}"))

    small_extra = make_spec(tmp_path, corpus, budget={**BUDGET, "unique_tokens": 2_000, "total_tokens": 60_000})
    error = input_error(small_extra, lambda s: prepare_data(s, tmp_path / "out2"))
    assert error.problems[0].key == "budget.total_tokens" and "oracle" in str(error)
    assert [p.parent.name.split("-")[0] for p in (tmp_path / "out2").glob(f"*/{MANIFEST}")] == ["pools"]


def test_pretrained_tokenizer_and_no_reference_arm(prepared, tmp_path, capsys):
    _, data = prepared
    write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in python_docs()[200:260]])
    spec = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"},
                     tokenizer={"kind": "pretrained", "name": str(data.tokenizer_dir)},
                     arms=[{"kind": "repetition"}], search={"objective": {"arm": "repetition"}})
    out = prepare_data(spec, tmp_path / "out", progress=True)
    shown = capsys.readouterr().out  # the progress bars: one per pool, no extra pool without an oracle
    assert "organic" in shown and "tok/s" in shown and "extra" not in shown
    assert out.extra is None and out.organic.n_tokens == U and out.validation.n_tokens == V
    assert out.vocab == data.vocab and out.stats["tokenizer"]["train_docs"] == 0
    assert (out.tokenizer_dir / "tokenizer.json").read_text() == (data.tokenizer_dir / "tokenizer.json").read_text()


def test_unloadable_pretrained_tokenizer_names_the_key(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "x" * 300}])
    spec = make_spec(tmp_path, {"source": "jsonl", "path": "c.jsonl"},
                     tokenizer={"kind": "pretrained", "name": "nobody/no-such-tokenizer"})
    error = input_error(spec, lambda s: prepare_data(s, tmp_path / "out"))
    assert error.problems[0].key == "tokenizer.name"
