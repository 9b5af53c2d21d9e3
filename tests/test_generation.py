"""Generation: operations' extraction and filters, chunking, backends, the resumable set cache.

Mechanics run on tiny real models built here (a random one, and one trained for a few seconds to
answer with a fixed paraphrase heading); the packaged SmolLM2 is exercised in `slow` tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from synpro.data.shards import TokenShard, write_shard
from synpro.errors import InputError
from synpro.generation.backends import Sampling, make_backend, resolve_backend
from synpro.generation.backends.transformers_backend import TransformersBackend
from synpro.generation.chunking import doc_windows, iter_windows, split_chunks
from synpro.generation.generator import PACKAGED
from synpro.generation.operations import OPERATIONS
from synpro.generation.operations.base import (
    EMPTY,
    LOW_SIMILARITY,
    MISSING_HEADING,
    NO_ENTRIES,
    RATIO_HIGH,
    RATIO_LOW,
    REPEATED_HEADING,
    REPETITIVE,
    TOO_SHORT,
    TRUNCATED,
)
from synpro.generation.operations.reformat import parse_entries
from synpro.generation.synthetic import RECORDS, generate_set, set_key
from synpro.generation.text import length_ratio, novelty, repetition
from synpro.models import Vocab
from synpro.spec import OperationSpec, Spec

REPHRASE, REFORMAT = OPERATIONS.get("rephrase"), OPERATIONS.get("reformat")

from generators import doc_topics, train_tokenizer  # noqa: E402  (tests/ is on sys.path)
@dataclass
class Prepared:
    """The data stage's hand-over, built by hand."""

    tokenizer_dir: Path
    vocab: Vocab
    organic: TokenShard
    organic_docs: Path


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Prepared:
    root = tmp_path_factory.mktemp("organic")
    docs = doc_topics(12)
    tokenizer = train_tokenizer(docs, 600, ["<|endoftext|>", "<|pad|>"])
    tokenizer.save_pretrained(str(root / "tokenizer"))
    vocab = Vocab(size=len(tokenizer), bos_id=0, eos_id=0, pad_id=1)
    ids = [tokenizer(d)["input_ids"] for d in docs]
    shard = write_shard(root / "organic", [i + [0] for i in ids], vocab.size)
    with open(root / "docs.jsonl", "w") as f:
        for k, (d, i) in enumerate(zip(docs, ids)):
            f.write(json.dumps({"id": f"doc{k}", "text": d, "n_tokens": len(i)}) + "\n")
    return Prepared(root / "tokenizer", vocab, shard, root / "docs.jsonl")


def _spec(model: Path | str, **generation) -> Spec:
    gen = {"generator": {"model": str(model), "backend": "transformers", "temperature": 0, "max_new_tokens": 60,
                         "batch_size": 4},
           "window_tokens": 200, "chunk_chars": 500}
    for key, value in generation.items():
        if isinstance(value, dict) and key in gen:
            gen[key] = {**gen[key], **value}
        else:
            gen[key] = value
    return Spec.model_validate({"experiment": {"name": "gen"}, "budget": {"unique_tokens": 1000, "epochs": 2},
                                "generation": gen})


# ---- operations --------------------------------------------------------------------------------

SOURCE = "Python lists are mutable sequences. They keep their items in order and can grow or shrink. " * 3


def test_rephrase_extracts_text_after_heading():
    good = REPHRASE.extract(f"Sure!\n**Here's a paraphrased version of the text:**\n\n{SOURCE}\n")
    assert good.failures == () and good.text == SOURCE.strip()
    assert REPHRASE.extract(SOURCE).failures == (MISSING_HEADING,)
    assert REPHRASE.extract("   \n").failures == (EMPTY,)
    assert REPHRASE.extract("Here is a paraphrased version:\n   ").failures == (EMPTY,)
    repeated = REPHRASE.extract(f"Here is a paraphrased version:\n{SOURCE}\nHere is a paraphrased version:\n{SOURCE}")
    assert REPEATED_HEADING in repeated.failures and repeated.text == ""
    cut = REPHRASE.extract(f"Here is a paraphrased version:\n{SOURCE}", finished=False)
    assert cut.failures == (TRUNCATED,)


def test_window_filters_length_ratio_min_chars_and_similarity():
    assert all(REPHRASE.judge(SOURCE, SOURCE, similarity=0.9).values())
    verdicts = REPHRASE.judge(SOURCE, SOURCE * 2, similarity=0.9)
    assert verdicts[RATIO_HIGH] is False and verdicts[RATIO_LOW] is True
    assert REPHRASE.judge(SOURCE, SOURCE[:40], similarity=0.9)[TOO_SHORT] is False
    assert REPHRASE.judge(SOURCE, SOURCE[:40], similarity=0.9)[RATIO_LOW] is False
    assert REPHRASE.judge(SOURCE, SOURCE, similarity=0.1)[LOW_SIMILARITY] is False
    assert REPHRASE.judge(SOURCE, "", similarity=None)[TOO_SHORT] is False  # empty never passes
    loop = "A function definition is a type of function definition. " * 8
    assert REPHRASE.judge(SOURCE[:300], loop[:300], similarity=0.9)[REPETITIVE] is False
    assert REPHRASE.judge(loop, loop, similarity=0.9)[REPETITIVE] is True  # no worse than its source


def test_spec_overrides_operation_defaults():
    op = REPHRASE.configured(OperationSpec(kind="rephrase", heading="Rewritten:", max_length_ratio=3.0,
                                           min_similarity=-1))
    assert op.heading == "Rewritten:" and op.filters.max_length_ratio == 3.0
    assert op.filters.min_length_ratio == REPHRASE.filters.min_length_ratio
    assert not op.filters.checks_similarity and LOW_SIMILARITY not in op.judge(SOURCE, SOURCE, None)
    assert op.extract(f"Rewritten:\n{SOURCE}").text == SOURCE.strip()
    braces = op.messages("a dict {'k': 1} and {text}")[1]["content"]
    assert "a dict {'k': 1} and {text}" in braces  # organic braces survive the template


def test_reformat_parses_entries_into_plain_text():
    raw = ("Here are the entries:\n1. **Topic:** Lists\n**Content:** Lists are mutable.\n\n"
           "2. Topic: Tuples\nContent: Tuples are immutable\nand hashable.\n\n"
           "Topic: Orphan without content\n\n- Topic: Sets\nSets hold unique items.")
    out = REFORMAT.extract(raw)
    assert out.failures == ()
    assert out.text == ("Topic: Lists\nContent: Lists are mutable.\n\nTopic: Tuples\nContent: Tuples are immutable\n"
                        "and hashable.\n\nTopic: Sets\nContent: Sets hold unique items.")
    many = "Here are the entries:\n" + "\n".join(f"Topic: T{i}\nContent: C{i}." for i in range(12))
    assert [t for t, _ in parse_entries(REFORMAT.extract(many).text)] == [f"T{i}" for i in range(8)]
    assert REFORMAT.extract(many, finished=False).text == REFORMAT.extract(many).text  # 8 complete before the cut
    cut = "Here are the entries:\nTopic: A\nContent: a.\nTopic: B\nContent: b, and then"
    assert REFORMAT.extract(cut, finished=False).text == "Topic: A\nContent: a."  # the partial entry goes
    assert REFORMAT.extract(cut[:40], finished=False).failures == (TRUNCATED, NO_ENTRIES)
    assert REFORMAT.extract("Here are the entries:\nJust prose, no entries.").failures == (NO_ENTRIES,)
    assert REFORMAT.prefix == "Here are the entries:\nTopic:"  # the generator continues the first entry
    assert NO_ENTRIES in REFORMAT.reasons() and NO_ENTRIES not in REPHRASE.reasons()


# ---- chunking ----------------------------------------------------------------------------------

def test_windows_cover_documents_with_stable_ids(data):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    for doc_id, text in [(f"d{i}", t) for i, t in enumerate(doc_topics(6))]:
        windows = doc_windows(doc_id, text, tokenizer, 64)
        assert "".join(w.text for w in windows) == text
        assert [w.id for w in windows] == [f"{doc_id}:{i}" for i in range(len(windows))]
        for w in windows:  # re-tokenizing a token-aligned slice can merge at most across its two edges
            assert len(tokenizer(w.text, add_special_tokens=False)["input_ids"]) <= 64 + 1
    first = [w.id for w in iter_windows(data.organic_docs, tokenizer, 64)]
    assert first == [w.id for w in iter_windows(data.organic_docs, tokenizer, 64)]
    assert [w.id for w in iter_windows(data.organic_docs, tokenizer, 64, max_windows=5)] == first[:5]


def test_chunks_respect_the_limit_and_prefer_paragraphs_then_sentences():
    paragraphs = ["Sentence one is here. Sentence two follows it. " * 4 for _ in range(6)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = split_chunks(text, 450)
    assert all(len(c) <= 450 for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # nothing lost, whitespace aside
    assert all(c.endswith("it.") for c in chunks)  # cuts fell on paragraph ends
    one_paragraph = " ".join(f"This is sentence number {i}." for i in range(40))
    assert all(c.endswith(".") and len(c) <= 300 for c in split_chunks(one_paragraph, 300))
    sizes = [len(c) for c in split_chunks(one_paragraph, 300)]
    assert max(sizes) - min(sizes) < 120  # balanced: no tiny trailing chunk
    assert split_chunks("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


# ---- backends ----------------------------------------------------------------------------------

def test_batched_greedy_equals_one_at_a_time(random_model):
    backend = TransformersBackend.load(random_model, batch_size=4)
    prompts = [REPHRASE.messages(t[:n]) for t, n in zip(doc_topics(5), (80, 400, 150, 600, 30))]
    greedy = Sampling(temperature=0, max_new_tokens=12)
    batched = backend.generate(prompts, greedy)
    backend.batch_size = 1
    single = backend.generate(prompts, greedy)
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.tokens == 12 and not c.finished for c in batched)  # a random model never says EOS
    sampled = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=3)
    assert [c.text for c in backend.generate(prompts, sampled)] == [c.text for c in backend.generate(prompts, sampled)]
    assert backend.generate(prompts, sampled) != backend.generate(prompts, Sampling(max_new_tokens=12, seed=4))


def test_unloadable_generator_is_an_input_error(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for model in (broken, "no-such-org/no-such-model"):
        with pytest.raises(InputError) as err:
            make_backend(_spec(model))
        assert err.value.problems[0].key == "generation.generator.model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def openai_server(random_model):
    """A real HTTP server speaking the OpenAI chat API, answering with the transformers backend."""
    import uvicorn
    from fastapi import FastAPI

    backend = TransformersBackend.load(random_model, batch_size=1)
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        sampling = Sampling(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                            max_new_tokens=body["max_tokens"], seed=body.get("seed") or 0)
        done = backend.generate([body["messages"]], sampling)[0]
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop" if done.finished else "length",
                             "message": {"role": "assistant", "content": done.text}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": done.tokens, "total_tokens": done.tokens}}

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", backend
    server.should_exit = True
    thread.join(timeout=10)


def test_openai_backend_matches_local_generation(openai_server):
    url, local = openai_server
    spec = _spec("tiny", generator={"backend": "openai", "endpoint": url, "concurrency": 3})
    remote = make_backend(spec)
    prompts = [REPHRASE.messages(t[:200]) for t in doc_topics(4)]
    greedy = Sampling(temperature=0, max_new_tokens=10)
    assert [c.text for c in remote.generate(prompts, greedy)] == [c.text for c in local.generate(prompts, greedy)]
    with pytest.raises(InputError) as err:
        make_backend(_spec("other", generator={"backend": "openai", "endpoint": url}))
    assert err.value.problems[0].key == "generation.generator.model"


def test_endpoint_down_is_an_input_error():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    spec = _spec("tiny", generator={"backend": "openai", "endpoint": url, "max_retries": 1, "timeout_seconds": 2})
    with pytest.raises(InputError) as err:
        make_backend(spec)
    assert err.value.problems[0].key == "generation.generator.endpoint" and url in str(err.value)


@pytest.mark.gpu
def test_vllm_backend_generates_on_gpu(random_model):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install 'synpro[gpu]'; CUDA machines only)")
    if not torch.cuda.is_available():
        pytest.skip("vllm needs CUDA")
    from synpro.generation.backends.vllm_backend import VllmBackend

    backend = VllmBackend(random_model, batch_size=2)
    out = backend.generate([REPHRASE.messages(t[:200]) for t in doc_topics(3)], Sampling(temperature=0, max_new_tokens=8))
    backend.close()
    assert len(out) == 3 and all(c.tokens <= 8 for c in out)


# ---- synthetic sets ----------------------------------------------------------------------------

def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RECORDS).read_text().splitlines()]


def _pool_ids(data: Prepared, spec: Spec) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    g = spec.generation
    return [w.id for w in iter_windows(data.organic_docs, tokenizer, g.window_tokens, g.max_windows)]


def test_set_passes_parrot_outputs_into_an_eos_terminated_shard(parrot_model, data, tmp_path):
    spec = _spec(parrot_model, operations={"rephrase": {"kind": "rephrase", "min_chars": 50, "min_length_ratio": 0,
                                                        "max_length_ratio": 50, "min_similarity": -1}},
                 max_windows=6)
    made = generate_set(spec, "rephrase", data, tmp_path, progress=False)
    records = _records(made.out_dir)
    assert [r["window"] for r in records] == _pool_ids(data, spec)
    passed = [r for r in records if r["passed"]]
    assert passed and made.stats["passed"] == len(passed) and made.complete
    assert made.stats["pass_rate"] == pytest.approx(len(passed) / len(records))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    docs = list(made.shard.documents())
    assert len(docs) == len(passed)
    for doc, record in zip(docs, passed):
        assert doc.tolist() == tokenizer(record["text"], add_special_tokens=False)["input_ids"] + [data.vocab.eos_id]
        assert record["text"].startswith("The statement evaluates")
    assert made.samples(2)[0] == {"window": passed[0]["window"], "source": passed[0]["source"],
                                  "output": passed[0]["text"]}
    assert made.metrics["pass_rate"] == made.stats["pass_rate"] and 0 <= made.metrics["novelty_3gram_mean"] <= 1
    assert made.metrics["length_ratio_mean"] == pytest.approx(
        sum(length_ratio(r["source"], r["text"]) for r in passed) / len(passed))


def test_limit_extends_and_a_complete_set_is_not_regenerated(random_model, data, tmp_path):
    spec = _spec(random_model, max_windows=7, generator={"max_new_tokens": 4})
    part = generate_set(spec, "rephrase", data, tmp_path, limit=3, progress=False)
    assert not part.complete and part.stats["windows"] == 3
    assert part.stats["passed"] == 0 and part.stats["failures"][TRUNCATED] == 3  # 4 random tokens never end
    assert part.shard.n_docs == 0
    full = generate_set(spec, "rephrase", data, tmp_path, progress=False)
    assert full.complete and [r["window"] for r in _records(full.out_dir)] == _pool_ids(data, spec)
    before = (full.out_dir / RECORDS).stat()
    again = generate_set(spec, "rephrase", data, tmp_path, limit=100, progress=False)
    after = (again.out_dir / RECORDS).stat()
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    assert again.stats == full.stats and again.metrics == full.metrics


def test_set_key_tracks_what_shapes_the_set(random_model, data):
    spec = _spec(random_model)
    key = set_key(spec, "rephrase", data)
    assert key == set_key(_spec(random_model), "rephrase", data)
    assert key != set_key(spec, "reformat", data)
    assert key != set_key(_spec(random_model, chunk_chars=400), "rephrase", data)
    assert key != set_key(_spec(random_model, generator={"temperature": 0.5}), "rephrase", data)
    assert key != set_key(_spec(random_model, operations={"rephrase": {"kind": "rephrase", "min_chars": 1}}),
                          "rephrase", data)
    assert key == set_key(_spec(random_model, generator={"batch_size": 1}), "rephrase", data)  # speed only
    with pytest.raises(InputError):
        set_key(spec, "missing", data)


_WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    import torch
    torch.set_num_threads(1)
    from synpro.data.shards import TokenShard
    from synpro.generation.synthetic import generate_set
    from synpro.models import Vocab
    from synpro.spec import Spec
    args = json.loads(sys.argv[1])
    data = SimpleNamespace(tokenizer_dir=Path(args["tokenizer_dir"]), vocab=Vocab(**args["vocab"]),
                           organic=TokenShard.open(args["organic"]), organic_docs=Path(args["organic_docs"]))
    made = generate_set(Spec.model_validate(args["spec"]), "rephrase", data, args["out"], progress=False)
    print(made.stats["windows"])
""")


def test_killed_generation_resumes_without_duplicates_or_gaps(random_model, data, tmp_path):
    spec = _spec(random_model, max_windows=40, generator={"max_new_tokens": 24, "batch_size": 2})
    args = json.dumps({"tokenizer_dir": str(data.tokenizer_dir), "vocab": vars(data.vocab),
                       "organic": str(data.organic.path), "organic_docs": str(data.organic_docs),
                       "spec": spec.to_dict(), "out": str(tmp_path)})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, args], env=env, stdout=subprocess.PIPE)
    records = tmp_path / f"rephrase-{set_key(spec, 'rephrase', data)}" / RECORDS
    deadline = time.time() + 120
    while not (records.exists() and records.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, "the worker ended before writing two batches"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = records.read_text().count("\n")
    assert 2 <= written < 40
    with open(records, "a") as f:
        f.write('{"window": "torn')  # what a kill in the middle of a write leaves
    made = generate_set(spec, "rephrase", data, tmp_path, progress=False)
    ids = [r["window"] for r in _records(made.out_dir)]
    assert ids == _pool_ids(data, spec) and len(ids) == 40 and made.complete


# ---- metrics -----------------------------------------------------------------------------------

def test_novelty_repetition_and_length_ratio():
    assert repetition("one two three four five six") == 0.0
    assert repetition("a b c d " * 10) > 0.8
    assert novelty("a b c d e", "a b c d e") == 0.0
    assert novelty("a b c d e", "a b c x y") == pytest.approx(2 / 3)
    assert novelty("a b c", "") == 0.0
    assert length_ratio("abcd", "ab") == 0.5


@pytest.mark.slow
def test_minilm_similarity_ranks_a_paraphrase_above_an_unrelated_text():
    from synpro.generation.metrics import similarities

    source = "The break statement ends the nearest enclosing for or while loop."
    paraphrase = "A break statement stops the innermost for loop or while loop that contains it."
    unrelated = "Austen's heroine walked to the village to buy ribbons for the ball."
    close, far, empty = similarities([source] * 3, [paraphrase, unrelated, ""])
    assert close > 0.7 > far + 0.3 and empty == 0.0


def test_choosing_the_default_generators_backend_converts_nothing(tmp_path, monkeypatch):
    """`synpro validate` resolves the backend (the set's key names it) without the ~30 s GGUF conversion."""
    monkeypatch.setenv("SYNPRO_CACHE", str(tmp_path))
    spec = _spec("smollm2-135m-instruct", generator={"backend": "auto"})
    assert resolve_backend(spec) in (("vllm", "transformers") if torch.cuda.is_available() else ("continuous",))
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_default_generator_converts_once_and_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNPRO_CACHE", str(tmp_path))
    spec = _spec("smollm2-135m-instruct", generator={"max_new_tokens": 40})
    backend = make_backend(spec)
    folder = next((tmp_path / "models").iterdir())
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == PACKAGED["smollm2-135m-instruct"].model_type  # what validate reads unconverted
    out = backend.generate([REPHRASE.messages(doc_topics(1)[0][:600])], Sampling(temperature=0, max_new_tokens=40))
    assert out[0].tokens > 5 and out[0].text.strip()
    from synpro.generation import generator

    def convert_again(*args):
        raise AssertionError("the GGUF was converted again")

    # The converted copy, not the GGUF again (asserted directly, not by a load time a busy machine stretches).
    monkeypatch.setattr(generator, "_convert_gguf", convert_again)
    make_backend(spec)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [folder.name]
