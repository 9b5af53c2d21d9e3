"""The builtin task's texts come from the validation pool and avoid the pretraining pools."""

from __future__ import annotations

import json

from pools import prepare_data
from synpro.evaluation.cloze import NGRAM, build_builtin_task
from synpro.evaluation.sources import builtin_task_texts
from synpro.spec import Spec


def _runs(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def test_held_out_texts_are_the_validation_pool_and_items_never_overlap_pretraining(tmp_path):
    spec = Spec.model_validate({"experiment": {"name": "t", "seed": 1}, "tokenizer": {"vocab_size": 512},
                                "budget": {"unique_tokens": 20_000, "total_tokens": 40_000,
                                           "validation_tokens": 8_000}})
    prepared = prepare_data(spec, tmp_path / "data", progress=False)
    held_out, exclude = builtin_task_texts(prepared)
    assert len(held_out) == prepared.validation.n_docs
    organic = [json.loads(line)["text"] for line in prepared.organic_docs.read_text().splitlines()]
    assert exclude[:len(organic) - 1] == organic[:-1]  # decoding round-trips (the last one is cut)
    assert len(exclude) == prepared.organic.n_docs + prepared.extra.n_docs
    assert not set(held_out) & set(exclude)

    built = build_builtin_task(held_out, tmp_path / "task", 100, seed=0, exclude=exclude)
    pretraining = set().union(*map(_runs, exclude))
    for line in built.data_path.read_text().splitlines():
        item = json.loads(line)
        passage = item["context"] + item["choices"][item["label"]]
        assert passage in held_out[item["doc"]] and not _runs(passage) & pretraining
