"""The evaluate stage's key: an evaluation precision other than the default enters it; the device never does."""

from synpro.plan import plan_trial
from synpro.spec import parse_spec

SPEC = ("experiment: {name: e}\nbudget: {unique_tokens: 4096, total_tokens: 8192}\n"
        "training: {eval_interval_tokens: 4096}\neval: {tasks: [{name: synpro_cloze}]%s}\n")


def _evaluate_keys(extra: str = "") -> list[str]:
    return [s.key for s in plan_trial(parse_spec(SPEC % extra)).graph if s.kind == "evaluate"]


def test_precision_keys_the_scores_and_the_device_does_not():
    plain = _evaluate_keys()
    assert plain and _evaluate_keys(", device: cpu") == plain
    assert _evaluate_keys(", precision: bf16") != plain
