"""The probe and influence scoring on a tiny OLMo-2 pretrained a little in-process (see conftest.py)."""

from __future__ import annotations

import json
import random
import statistics
import threading

import pytest

from synpro.errors import InputError
from synpro.influence.probe import run_probe
from synpro.influence.reference import load_reference
from synpro.influence.scoring import InfluenceScorer
from synpro.influence.service import InfluenceClient, InfluenceSource, make_server
from synpro.spec import ProbeSpec, ReferenceSpec

HELD_OUT = 40


@pytest.fixture(scope="module")
def probed(tiny_checkpoint, tmp_path_factory):
    """θ′ after 30 steps on the builtin reference set minus HELD_OUT pairs kept for scoring."""
    theta, tokenizer = tiny_checkpoint
    folder = tmp_path_factory.mktemp("probe")
    pairs = load_reference(ReferenceSpec())
    config = ProbeSpec(steps=30, lr=1e-3, batch_size=16, max_tokens=256, eval_examples=32)
    result = run_probe(theta, tokenizer, pairs[:-HELD_OUT], config, folder / "theta-prime")
    return theta, tokenizer, result, pairs[-HELD_OUT:], config, pairs


def shuffled_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


@pytest.mark.slow  # pretrains θ and probes it: ~25 s on an idle core
def test_probe_lowers_the_reference_loss_and_is_reused(probed):
    theta, tokenizer, result, _, config, pairs = probed
    assert result.loss_after < result.loss_before and not result.reused
    manifest = json.loads((result.out_dir / "probe.json").read_text())
    assert manifest["key"] == result.key and manifest["settings"]["lr"] == 1e-3
    again = run_probe(theta, tokenizer, pairs[:-HELD_OUT], config, result.out_dir)
    assert again.reused and again.loss_after == result.loss_after


@pytest.mark.slow  # pretrains θ and probes it: ~25 s on an idle core
def test_texts_like_the_reference_score_positive_and_noise_does_not(probed):
    from pydoc_data.topics import topics

    theta, tokenizer, result, held, _, _ = probed
    scorer = InfluenceScorer(theta, result.out_dir, tokenizer, max_tokens=256, batch_size=8)
    like = scorer.influence([f"{p['prompt']}\n{p['response']}" for p in held])
    rng = random.Random(0)
    noise = scorer.influence([shuffled_words(topics[k][:800], rng) for k in sorted(topics)[:HELD_OUT]])
    assert statistics.mean(like) > 0 >= statistics.mean(noise)


@pytest.mark.slow  # pretrains θ and probes it: ~25 s on an idle core
def test_a_score_does_not_depend_on_its_batch(probed, tmp_path):
    theta, tokenizer, result, held, _, _ = probed
    scorer = InfluenceScorer(theta, result.out_dir, tokenizer, max_tokens=256, batch_size=8)
    short = held[0]["response"][:120]
    alone = scorer.influence([short])[0]
    longer = [p["prompt"] + "\n" + p["response"] * 3 for p in held[1:8]]
    assert max(len(scorer.encode([t])[0]) for t in longer) > 3 * len(scorer.encode([short])[0])
    batched = scorer.influence(longer[:3] + [short] + longer[3:])[3]
    assert batched == pytest.approx(alone, abs=1e-5)

    cached = InfluenceScorer(theta, result.out_dir, tokenizer, max_tokens=256, cache_path=tmp_path / "c.sqlite")
    first = cached.influence([short, longer[0]])
    cached.base = cached.probe = None  # a cache hit must not touch the models
    assert cached.influence([longer[0], short]) == first[::-1]


@pytest.mark.slow  # pretrains θ and probes it: ~25 s on an idle core
def test_the_service_answers_like_the_scorer(probed):
    theta, tokenizer, result, held, _, _ = probed
    scorer = InfluenceScorer(theta, result.out_dir, tokenizer, max_tokens=256)
    server = make_server(scorer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        texts = [held[0]["response"], held[1]["response"]]
        assert InfluenceSource(url=url).open().influence(texts) == pytest.approx(scorer.influence(texts))
        assert InfluenceClient(url).health()["key"] == scorer.key
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(InputError, match="cannot be reached"):
        InfluenceClient(url, timeout=2).influence(["x"])


def test_bad_probe_inputs_are_input_errors(tmp_path):
    (tmp_path / "ref.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(InputError) as err:
        load_reference(ReferenceSpec(source="jsonl", path=str(tmp_path / "ref.jsonl")))
    assert err.value.problems[0].key == "probe.reference.prompt_field"
    with pytest.raises(InputError) as err:
        load_reference(ReferenceSpec(source="jsonl", path=str(tmp_path / "ref.jsonl"), prompt_field="question"))
    assert err.value.problems[0].key == "probe.reference.response_field"
    with pytest.raises(InputError, match="no checkpoint"):
        run_probe(tmp_path / "missing", tmp_path, [{"prompt": "a", "response": "b"}] * 4, ProbeSpec(), tmp_path / "o")


def test_a_reference_set_can_be_a_saved_hf_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"q": f"Q{i}?", "a": f"A{i}.", "n": i} for i in range(3)]).save_to_disk(str(tmp_path / "ds"))
    pairs = load_reference(ReferenceSpec(source="hf", dataset=str(tmp_path / "ds"), prompt_field="q", response_field="a"))
    assert pairs == [{"prompt": f"Q{i}?", "response": f"A{i}."} for i in range(3)]
    with pytest.raises(InputError) as err:
        load_reference(ReferenceSpec(source="hf", dataset=str(tmp_path / "ds"), prompt_field="q"))
    assert err.value.problems[0].key == "probe.reference.response_field"


def test_the_builtin_reference_set_shares_no_line_with_the_builtin_corpus(tmp_path):
    from synpro.data.builtin import python_docs
    from synpro.influence.reference import ensure_builtin_reference

    built = ensure_builtin_reference(tmp_path)  # built here, from this interpreter
    pairs = load_reference(ReferenceSpec())  # as every probe reads it: once per Python version, from the cache
    assert len(pairs) > 300 and pairs == [json.loads(line) for line in built.read_text().splitlines()]
    corpus = "\n".join(python_docs())
    assert not [p for p in pairs if p["response"].splitlines()[0] in corpus and len(p["response"].splitlines()[0]) >= 30]


def test_scores_in_bf16_are_cached_apart_from_fp32_ones(tmp_path):
    from synpro.influence.scoring import scorer_key

    assert scorer_key(tmp_path, 2048) == scorer_key(tmp_path, 2048, "fp32") == scorer_key(tmp_path, 2048, None)
    assert scorer_key(tmp_path, 2048, "bf16") != scorer_key(tmp_path, 2048)
