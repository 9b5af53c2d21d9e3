"""What validation rejects before any GRPO work, each problem under its spec key; the paper's defaults."""

from __future__ import annotations

import pytest

from synpro.errors import InputError
from synpro.grpo.checks import check_grpo
from synpro.spec import GrpoSpec, Spec, parse_spec
from test_trainer import make_spec  # noqa: E402  (tests/grpo is on sys.path under pytest's rootdir imports)


def test_the_defaults_are_the_papers():
    g = GrpoSpec()
    assert (g.lr, g.lr_schedule, g.min_lr_ratio, g.warmup_ratio, g.beta) == (1e-6, "cosine", 0.1, 0.1, 0.005)
    assert (g.num_generations, g.temperature, g.top_p, g.prompts_per_step, g.init) == (8, 1.0, 0.9, 16, "base")
    assert (g.loss_type, g.scale_rewards, g.epsilon, g.num_iterations) == ("grpo", "group", 0.2, 1)


def _problem_keys(spec: Spec, ops=("rephrase",)) -> list[str]:
    with pytest.raises(InputError) as err:
        check_grpo(spec, ops)
    return [p.key for p in err.value.problems]


def test_bad_input_names_its_key(random_model, tmp_path):
    spec = make_spec(random_model)
    check_grpo(spec, ["rephrase"])  # a good spec passes
    assert _problem_keys(spec.with_params({"grpo.base_model": str(tmp_path / "nowhere")})) == ["grpo.base_model"]
    assert _problem_keys(spec.with_params({"rewards.weights": {"rephrase": {"faithfulness": 1.0}}})) == \
        ["rewards.weights.rephrase.faithfulness"]
    assert _problem_keys(spec.with_params({"rewards.weights": {"rephrase": {}}})) == ["rewards.weights.rephrase"]
    yaml = ("experiment: {name: g}\nbudget: {unique_tokens: 1000, epochs: 2}\n"
            "grpo:\n  num_generations: 8\n  prompts_per_step: 3\n  micro_batch_size: 5\n")
    with pytest.raises(InputError) as err:
        parse_spec(yaml, "spec.yaml")
    assert err.value.problems[0].key == "grpo.micro_batch_size" and err.value.problems[0].line == 6
    with pytest.raises(InputError) as err:
        parse_spec(yaml.replace("num_generations: 8", "num_generations: 1"), "spec.yaml")
    assert err.value.problems[0].key.startswith("grpo.num_generations")


