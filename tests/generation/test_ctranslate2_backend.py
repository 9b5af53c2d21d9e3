"""The CTranslate2 CPU backend on tiny real models: conversion cache, seeding, agreement with transformers,
finished/tokens semantics, `auto` on a CPU, input errors, and the set key naming the backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from generators import PARROT_ANSWER, doc_topics
from synpro.errors import InputError
from synpro.generation.backends import Sampling, make_backend, resolve_backend
from synpro.generation.backends.ctranslate2_backend import CTranslate2Backend, converted
from synpro.generation.backends.transformers_backend import TransformersBackend
from synpro.generation.operations import OPERATIONS
from synpro.generation.synthetic import set_config
from synpro.spec import Spec

pytest.importorskip("ctranslate2")

REPHRASE = OPERATIONS.get("rephrase")


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """Conversions go to a cache of this module's own."""
    before = os.environ.get("SYNPRO_CACHE")
    os.environ["SYNPRO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["SYNPRO_CACHE"])
    if before is None:
        del os.environ["SYNPRO_CACHE"]
    else:
        os.environ["SYNPRO_CACHE"] = before


def _prompts(n: int = 5):
    return [REPHRASE.messages(t[:k]) for t, k in zip(doc_topics(n), (80, 400, 150, 600, 30))]


def _spec(model, backend: str = "ctranslate2", **generator) -> Spec:
    return Spec.model_validate({"experiment": {"name": "ct2"}, "budget": {"unique_tokens": 1000, "epochs": 2},
                                "generation": {"generator": {"model": str(model), "backend": backend, **generator},
                                               "window_tokens": 200, "chunk_chars": 500}})


def test_conversion_is_done_once_per_weights_and_quantization(random_model, cache):
    first = converted(random_model, "int8")
    assert (first / "model.bin").is_file() and first.parent == cache / "ctranslate2"
    stamp = (first / "model.bin").stat().st_mtime_ns
    assert converted(random_model, "int8") == first and (first / "model.bin").stat().st_mtime_ns == stamp
    other = converted(random_model, "float32")
    assert other != first and (other / "model.bin").is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]  # renamed into place


def test_seeded_sampling_is_reproducible(random_model):
    backend = CTranslate2Backend.load(random_model, batch_size=2)
    prompts = _prompts()
    sampled = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=3)
    first = backend.generate(prompts, sampled)
    assert backend.generate(prompts, sampled) == first
    assert backend.generate(prompts, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=4)) != first
    assert all(c.tokens == 12 and not c.finished for c in first)  # a random model never says EOS


def test_greedy_matches_the_transformers_backend(random_model, parrot_model):
    greedy = Sampling(temperature=0, max_new_tokens=12)
    for model in (random_model, parrot_model):
        reference = TransformersBackend.load(model, batch_size=2).generate(_prompts(), greedy)
        fast = CTranslate2Backend.load(model, batch_size=2, quantization="float32").generate(_prompts(), greedy)
        assert [c.text for c in fast] == [c.text for c in reference]
    # int8 weights round differently, but the trained answer survives them
    int8 = CTranslate2Backend.load(parrot_model, batch_size=3).generate(_prompts(3), Sampling(temperature=0, max_new_tokens=80))
    assert all(c.finished and c.text.startswith(PARROT_ANSWER[:40]) for c in int8)


def test_finished_and_tokens_count_the_stop_token(parrot_model):
    long = Sampling(temperature=0, max_new_tokens=100)
    reference = TransformersBackend.load(parrot_model, batch_size=4).generate(_prompts(4), long)
    fast = CTranslate2Backend.load(parrot_model, batch_size=4, quantization="float32").generate(_prompts(4), long)
    assert fast == reference and all(c.finished for c in fast)  # text, tokens (EOS counted) and finished
    cut = CTranslate2Backend.load(parrot_model, batch_size=4, quantization="float32").generate(
        _prompts(2), Sampling(temperature=0, max_new_tokens=5))
    assert all(c.tokens == 5 and not c.finished for c in cut)


def test_auto_takes_ctranslate2_on_a_cpu_for_models_the_continuous_decoder_lacks(random_model, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("auto takes vLLM or transformers where CUDA is present")
    monkeypatch.setattr("synpro.generation.backends.continuous_backend.implements", lambda spec: False)
    spec = _spec(random_model, backend="auto", batch_size=3)
    assert resolve_backend(spec) == "ctranslate2"
    backend = make_backend(spec)
    assert isinstance(backend, CTranslate2Backend) and backend.max_batch_size == 6 and backend.batch_size == 12
    assert backend.threads == torch.get_num_threads()


def test_unloadable_generator_is_an_input_error(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for model in (broken, tmp_path / "missing", "no-such-org/no-such-model"):
        with pytest.raises(InputError) as err:
            make_backend(_spec(model))
        assert err.value.problems[0].key == "generation.generator.model"


def test_the_set_key_names_the_backend(random_model, monkeypatch):
    transformers = set_config(_spec(random_model, backend="transformers"), "rephrase")
    assert "backend" not in transformers  # sets made before backends entered the key keep theirs
    ct2 = set_config(_spec(random_model), "rephrase")
    assert ct2["backend"] == "ctranslate2-int8" and {**ct2, "backend": None} != transformers
    assert {k: v for k, v in ct2.items() if k != "backend"} == transformers
    if not torch.cuda.is_available():
        monkeypatch.setattr("synpro.generation.backends.continuous_backend.implements", lambda spec: False)
        assert set_config(_spec(random_model, backend="auto"), "rephrase") == ct2
    assert set_config(_spec(random_model, backend="vllm"), "rephrase")["backend"] == "vllm"
