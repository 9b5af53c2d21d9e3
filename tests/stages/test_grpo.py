"""The grpo stage: what its key follows, the inputs it takes, bad input, and a run through the Runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from synpro.errors import InputError
from synpro.spec import Spec
from synpro.stages import Runner
from synpro.stages.base import Stage
from synpro.stages.graph import GraphBuilder
from synpro.stages.grpo import GrpoStage
from synpro.stages.pools import PoolsStage

sys.path.insert(0, str(Path(__file__).parents[1] / "grpo"))
from test_trainer import make_spec  # noqa: E402  (the GRPO tests' spec)


def _stage(spec: Spec, **inputs) -> GrpoStage:
    return GrpoStage(spec, "rephrase", PoolsStage(spec), **inputs)


def test_the_key_follows_weights_and_settings_not_speed_knobs(random_model):
    base = make_spec(random_model)
    key = _stage(base).key
    changed = {
        "weights": {"rewards.weights": {"rephrase": {"format": 2.0, "length": 1.0, "similarity": 1.0}}},
        "a reward dropped": {"rewards.weights": {"rephrase": {"format": 1.0, "length": 1.0}}},
        "a reward setting": {"rewards.length.max_ratio": 1.5},
        "lr": {"grpo.lr": 2e-3}, "beta": {"grpo.beta": 0.0}, "loss": {"grpo.loss_type": "dapo"},
        "prefill": {"grpo.prefill_heading": False}, "seed": {"grpo.seed": 7},
        "windows": {"generation.window_tokens": 50},
    }
    for what, params in changed.items():
        assert _stage(base.with_params(params)).key != key, what
    same = {"grpo.micro_batch_size": 2, "grpo.save_every": 5, "grpo.eval_every": 0, "grpo.eval_samples": 1,
            "grpo.backend": "transformers", "generation.generator.batch_size": 3}
    for path, value in same.items():
        assert _stage(base.with_params({path: value})).key == key, path
    assert _stage(base.with_params({"grpo.seed": 0})).key == key  # the seed as it takes effect


def test_inputs_probe_and_previous(random_model):
    spec = make_spec(random_model)
    first = _stage(spec)
    assert set(first.inputs) == {"pools"}
    with pytest.raises(ValueError):
        _stage(spec, previous=first)  # init is "base"
    again = spec.with_params({"grpo.init": "previous"})
    graph = GraphBuilder(again, 4000)
    second = graph.grpo("rephrase", previous=first)
    assert second.inputs["previous"] is first and second.key != graph.grpo("rephrase").key
    assert set(GraphBuilder(spec, 4000).grpo("rephrase", previous=first).inputs) == {"pools"}  # init base: ignored
    influence = spec.with_params({"rewards.weights": {"rephrase": {"influence": 3.0, "format": 1.0}}})
    with pytest.raises(InputError) as err:
        _stage(influence)
    assert err.value.problems[0].key == "rewards.weights.rephrase.influence"
    assert set(_stage(influence, probe=first).inputs) == {"pools", "probe"}


class _Organic(Stage):
    """What the pools stage hands a grpo stage: organic documents and the pretraining tokenizer."""

    kind = "test-organic"

    def __init__(self):
        super().__init__({})

    def run(self, ctx):
        from generators import doc_topics, train_tokenizer

        docs = doc_topics(10)
        train_tokenizer(docs, 600, ["<|endoftext|>", "<|pad|>"]).save_pretrained(str(ctx.folder / "tokenizer"))
        (ctx.folder / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{k}", "text": t}) + "\n"
                                                       for k, t in enumerate(docs)))
        return {}

    def load(self, folder, inputs):
        return SimpleNamespace(organic_docs=folder / "docs.jsonl", tokenizer_dir=folder / "tokenizer")


def test_the_runner_trains_once_and_then_loads_the_generator(random_model, tmp_path):
    from transformers import AutoModelForCausalLM

    spec = make_spec(random_model, steps=2, eval_every=0)
    stage = GrpoStage(spec, "rephrase", _Organic())
    generator = Runner(tmp_path, progress=False).run(stage)
    AutoModelForCausalLM.from_pretrained(str(generator))
    manifest = json.loads((tmp_path / stage.dirname / "_stage.json").read_text())
    assert manifest["metrics"]["steps"] == 2 and "generator/config.json" in manifest["outputs"]
    assert Runner(tmp_path, progress=False).run(stage) == generator  # done: loaded, not trained again
