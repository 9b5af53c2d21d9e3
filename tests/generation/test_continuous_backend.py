"""The continuous-batching CPU backend on tiny real models: exact top-p, seeding, per-prompt streams
independent of the batch, greedy agreement with transformers at fp32, finished/tokens semantics, `auto`
on a CPU and the set key naming the backend and its precision."""

from __future__ import annotations

import pytest
import torch

from generators import PARROT_ANSWER, doc_topics
from synpro.errors import InputError
from synpro.generation.backends import Sampling, make_backend, resolve_backend
from synpro.generation.backends.continuous_backend import (PROMPTS_PER_SLOT, SLOTS_PER_BATCH, ContinuousBackend,
                                                           precision_for_cpu, sample_rows, shared_prefix, top_p_filter)
from synpro.generation.backends.transformers_backend import TransformersBackend
from synpro.generation.operations import OPERATIONS
from synpro.generation.synthetic import set_config
from synpro.spec import Spec

REPHRASE = OPERATIONS.get("rephrase")
LENGTHS = (80, 400, 150, 600, 30, 250, 500, 120)


def _prompts(n: int = 5):
    return [REPHRASE.messages(t[:k]) for t, k in zip(doc_topics(n), LENGTHS)]


def _spec(model, backend: str = "continuous", **generator) -> Spec:
    return Spec.model_validate({"experiment": {"name": "cb"}, "budget": {"unique_tokens": 1000, "epochs": 2},
                                "generation": {"generator": {"model": str(model), "backend": backend, **generator},
                                               "window_tokens": 200, "chunk_chars": 500}})


def _reference_nucleus(probs: torch.Tensor, top_p: float) -> list[dict[int, float]]:
    """Top-p by a full sort: the most likely tokens until (and including) the one whose mass reaches top_p."""
    kept = []
    for row in probs:
        values, ids = torch.sort(row, descending=True)
        before = values.cumsum(0) - values
        keep = before < top_p
        kept.append(dict(zip(ids[keep].tolist(), values[keep].tolist())))
    return kept


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_top_p_keeps_exactly_the_nucleus(top_p):
    torch.manual_seed(0)
    vocab = 5000
    # peaked rows (nucleus inside the first top-k) and flat rows (the full-sort fallback) together
    logits = torch.randn(12, vocab) * torch.tensor([8.0, 6, 4, 3, 2, 1, 0.5, 0.1, 5, 7, 0.2, 3]).unsqueeze(1)
    probs = torch.softmax(logits, -1)
    reference = _reference_nucleus(probs, top_p)
    assert any(len(r) > 32 for r in reference) and any(len(r) < 32 for r in reference)  # both paths ran
    for ladder in ((32,), (32, 256), (8, 32, 1024), ()):
        ids, values = top_p_filter(probs, top_p, ladder=ladder)
        for row_ids, row_values, ref in zip(ids, values, reference):
            got = {i: v for i, v in zip(row_ids.tolist(), row_values.tolist()) if v > 0}
            assert got == ref
    # and the same set as transformers' own warper keeps (finite logits = kept)
    from transformers.generation.logits_process import TopPLogitsWarper

    warped = TopPLogitsWarper(top_p)(None, torch.log(probs))
    assert [set(torch.isfinite(w).nonzero().squeeze(1).tolist()) for w in warped] == [set(r) for r in reference]


def test_top_p_ladder_equals_the_full_sort_on_every_rung():
    """Rows whose nucleus ends inside the first rung, the second, and past the last (full sort) in one batch:
    ids, order and probabilities equal a full sort's nucleus, and so does the token sampled from it."""
    torch.manual_seed(1)
    vocab = 4000
    scales = torch.tensor([9.0, 0.02, 3.0, 1.5, 0.05, 6.0, 2.0, 0.01]).unsqueeze(1)
    probs = torch.softmax(torch.randn(8, vocab) * scales, -1)
    widths = [len(r) for r in _reference_nucleus(probs, 0.9)]
    assert min(widths) <= 16 and any(16 < w <= 256 for w in widths) and max(widths) > 256  # every rung and the sort
    ids, values = top_p_filter(probs, 0.9, ladder=(16, 256))
    sorted_values, sorted_ids = torch.sort(probs, dim=-1, descending=True)
    for r, w in enumerate(widths):
        assert torch.equal(values[r, :w], sorted_values[r, :w]) and (values[r, w:] == 0).all()
        assert set(ids[r, :w].tolist()) == set(sorted_ids[r, :w].tolist())  # ties may swap places
    from synpro.generation.backends import continuous_backend

    draws = torch.rand(8, generator=torch.Generator().manual_seed(2))
    sampling = Sampling(temperature=1.0, top_p=0.9)
    laddered = sample_rows(torch.log(probs), sampling, draws)
    ladder = continuous_backend.TOP_K_LADDER
    try:
        continuous_backend.TOP_K_LADDER = ()
        assert torch.equal(laddered, sample_rows(torch.log(probs), sampling, draws))
    finally:
        continuous_backend.TOP_K_LADDER = ladder


def test_sampling_draws_from_the_renormalised_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = torch.log(probs).expand(4000, -1)
    draws = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    picked = sample_rows(logits, Sampling(temperature=1.0, top_p=0.7), draws)
    counts = torch.bincount(picked, minlength=4).float() / 4000
    assert counts[2:].sum() == 0  # 0.5 + 0.3 reaches 0.7: the nucleus is the first two
    assert abs(counts[0] - 0.5 / 0.8) < 0.03 and abs(counts[1] - 0.3 / 0.8) < 0.03
    everything = sample_rows(logits, Sampling(temperature=1.0, top_p=1.0), draws)
    assert (torch.bincount(everything, minlength=4) > 0).all()
    assert (sample_rows(logits, Sampling(temperature=0), draws) == 0).all()


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(random_model):
    backend = ContinuousBackend.load(random_model, batch_size=2, precision="fp32")
    prompts = _prompts(8)
    sampled = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=3)
    first = backend.generate(prompts, sampled)
    assert backend.generate(prompts, sampled) == first
    assert backend.generate(prompts, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=4)) != first
    assert all(c.tokens == 12 and not c.finished for c in first)  # a random model never says EOS
    # each prompt has its own random stream: other slot counts (refills, drains) give the same outputs
    for slots in (1, 3, 8):
        backend.slots = slots
        assert backend.generate(prompts, sampled) == first


def test_greedy_matches_the_transformers_backend_at_fp32(random_model, parrot_model):
    greedy = Sampling(temperature=0, max_new_tokens=12)
    for model in (random_model, parrot_model):
        reference = TransformersBackend.load(model, batch_size=2).generate(_prompts(), greedy)
        fast = ContinuousBackend.load(model, batch_size=1, precision="fp32")  # 8 slots for 5 prompts
        attn = fast.model.model.layers[0].self_attn  # fused projections: the modules' weights are views of them
        assert fast.fused and attn.q_proj.weight.data_ptr() == fast.fused[0].qkv.data_ptr()
        fast.slots = 3  # a refill
        assert [c.text for c in fast.generate(_prompts(), greedy)] == [c.text for c in reference]
    for precision in ("bf16", "int8"):  # weights round differently, but the trained answer survives them
        rounded = ContinuousBackend.load(parrot_model, batch_size=1, precision=precision)
        out = rounded.generate(_prompts(3), Sampling(temperature=0, max_new_tokens=80))
        assert all(c.finished and c.text.startswith(PARROT_ANSWER[:40]) for c in out)


def test_a_shared_prefix_is_computed_once_and_changes_no_output(random_model, monkeypatch):
    from synpro.generation.backends import continuous_backend

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix([[7, 8, 9], [7, 8, 9]]) == 2  # each prompt keeps a token of its own to prefill
    backend = ContinuousBackend.load(random_model, batch_size=1, precision="fp32")
    backend.slots = 3  # refills place the prefix into used slots
    prompts = _prompts(5)
    encoded = [backend.tokenizer.apply_chat_template(p, tokenize=True, return_dict=False) for p in prompts]
    assert shared_prefix(encoded) >= continuous_backend.MIN_SHARED  # the chat template's turn, at least
    runs = {}
    for minimum in (continuous_backend.MIN_SHARED, 10**9):  # shared, then every prompt prefilled whole
        monkeypatch.setattr(continuous_backend, "MIN_SHARED", minimum)
        runs[minimum] = [backend.generate(prompts, Sampling(temperature=0, max_new_tokens=12)),
                         backend.generate(prompts, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5))]
    shared, whole = runs.values()
    assert shared == whole


def test_finished_and_tokens_count_the_stop_token(parrot_model):
    long = Sampling(temperature=0, max_new_tokens=100)
    reference = TransformersBackend.load(parrot_model, batch_size=4).generate(_prompts(4), long)
    fast = ContinuousBackend.load(parrot_model, batch_size=1, precision="fp32")
    assert fast.generate(_prompts(4), long) == reference and all(c.finished for c in reference)
    cut = fast.generate(_prompts(2), Sampling(temperature=0, max_new_tokens=5))
    assert all(c.tokens == 5 and not c.finished for c in cut)
    assert fast.generate([], long) == []


def test_auto_on_a_cpu_and_the_set_key(random_model):
    if torch.cuda.is_available():
        pytest.skip("auto takes vLLM or transformers where CUDA is present")
    spec = _spec(random_model, backend="auto", batch_size=3)
    assert resolve_backend(spec) == "continuous"
    backend = make_backend(spec)
    assert isinstance(backend, ContinuousBackend) and backend.slots == 3 * SLOTS_PER_BATCH
    assert backend.batch_size == backend.slots * PROMPTS_PER_SLOT
    assert backend.precision == precision_for_cpu()
    key = set_config(_spec(random_model), "rephrase")
    assert key["backend"] == f"continuous-{precision_for_cpu()}"
    assert set_config(spec, "rephrase") == key
    transformers = set_config(_spec(random_model, backend="transformers"), "rephrase")
    assert "backend" not in transformers and {k: v for k, v in key.items() if k != "backend"} == transformers


def test_unsupported_architecture_is_an_input_error(tmp_path, random_model):
    import json
    import shutil

    other = tmp_path / "gpt2ish"
    shutil.copytree(random_model, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(InputError) as err:
        ContinuousBackend.load(other, batch_size=1)
    assert err.value.problems[0].key == "generation.generator.model"
    if not torch.cuda.is_available():  # auto passes such a model on to a backend that runs it
        assert resolve_backend(_spec(other, backend="auto")) in ("ctranslate2", "transformers")
    qwen = tmp_path / "qwen2ish"  # Qwen's configs name a sliding window they do not use
    shutil.copytree(random_model, qwen)
    (qwen / "config.json").write_text(json.dumps({**config, "model_type": "qwen2", "sliding_window": 4096,
                                                  "use_sliding_window": False}))
    assert resolve_backend(_spec(qwen, backend="auto")) == "continuous" or torch.cuda.is_available()
