"""Every reward's edge cases on real scorers (MiniLM, the fluency classifier, a tiny real judge model)."""

from __future__ import annotations

import pickle

import pytest

from synpro.errors import InputError
from synpro.rewards.scoring import build_rewards, reward_problems, score_pairs
from synpro.spec import parse_spec

BASE = "experiment: {name: t}\nbudget: {unique_tokens: 1000, total_tokens: 2000}\n"
SOURCE = ("The if statement is used for conditional execution. It selects exactly one of the suites by "
          "evaluating the expressions one by one until one is found to be true; then that suite is executed "
          "and no other part of the if statement is executed or evaluated. If all expressions are false, the "
          "suite of the else clause, if present, is executed.")
PARAPHRASE = ("The if statement runs code conditionally. It picks exactly one of the suites by evaluating the "
              "expressions in turn until one of them is true; that suite then runs and no other part of the "
              "statement is run or evaluated. When every expression is false, the else clause's suite runs, if "
              "there is one.")
RH = "Here is a paraphrased version:"
FH = "Here are the entries:"


def spec(extra: str = ""):
    return parse_spec(BASE + extra)


def scores(operation: str, names: list[str], outputs: list[str], extra: str = "", sources=None):
    rewards, weights = build_rewards(spec(extra), operation, names=names)
    return score_pairs(sources or [SOURCE] * len(outputs), outputs, rewards, weights)


def test_format_needs_the_heading_exactly_once():
    rows = scores("rephrase", ["format"], [f"{RH}\n{PARAPHRASE}", PARAPHRASE, f"{RH}\nx\n{RH}\ny", "",
                                           f"**here's a paraphrased version:**\n{PARAPHRASE}"])
    assert [r["format"] for r in rows] == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_length_rejects_empty_and_over_long_outputs():
    rows = scores("rephrase", ["length"], [f"{RH}\n{PARAPHRASE}", f"{RH}\n", "", f"{RH}\n{SOURCE} {SOURCE[:len(SOURCE) // 3]}",
                                           f"{SOURCE}"])
    # the last has no heading: its extracted output is empty, which never passes
    assert [r["length"] for r in rows] == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_a_lower_length_bound_rejects_a_short_answer_the_paper_lets_pass():
    short = f"{RH}\n{PARAPHRASE[:len(SOURCE) // 4]}"
    assert scores("rephrase", ["length"], [short])[0]["length"] == 1.0
    bounded = scores("rephrase", ["length"], [short, f"{RH}\n{PARAPHRASE}"], "rewards: {length: {min_ratio: 0.5}}")
    assert [r["length"] for r in bounded] == [0.0, 1.0]


def test_similarity_separates_a_paraphrase_from_unrelated_text():
    unrelated = "Bananas are rich in potassium and grow in tropical climates on large herbaceous plants."
    rows = scores("rephrase", ["similarity"], [f"{RH}\n{PARAPHRASE}", f"{RH}\n{unrelated}", f"{RH}\n"])
    assert [r["similarity"] for r in rows] == [1.0, 0.0, 0.0]
    cont = scores("rephrase", ["similarity"], [f"{RH}\n{PARAPHRASE}", f"{RH}\n{unrelated}"],
                  "rewards: {similarity: {continuous: true}}")
    assert cont[0]["similarity"] > 0.65 > cont[1]["similarity"] > -1


def test_bertscore_similarity_is_one_for_the_source_itself_and_zero_for_nothing(random_model):
    from synpro.rewards.bertscore import f1
    from synpro.rewards.scoring import reward_settings

    extra = f"rewards: {{similarity: {{scorer: bertscore, model: '{random_model}', layer: 1}}}}"
    rows = scores("rephrase", ["similarity"], [f"{RH}\n{SOURCE}", f"{RH}\n", ""], extra)
    assert [r["similarity"] for r in rows] == [1.0, 0.0, 0.0]
    pair = f1([SOURCE, SOURCE], [PARAPHRASE, SOURCE[:120]], model=str(random_model), layer=1)
    alone = f1([SOURCE], [PARAPHRASE], model=str(random_model), layer=1)
    assert 0 < pair[0] < 1 and abs(pair[0] - alone[0]) < 1e-5  # a pair's score does not depend on its batch
    rewards, weights = build_rewards(spec(extra), "rephrase", names=["similarity"], check=False)
    assert reward_settings(rewards, weights)["similarity"]["scorer"] == "bertscore-f1"


def test_structure_keeps_lists_and_code():
    source = "Steps:\n\n- open the file\n- read it\n\nThen close it.\n\n    f.close()"
    kept = "The steps:\n\n- open the file\n- read its content\n\nClose it afterwards.\n\n    f.close()"
    flattened = "Open the file, read it and close it with f.close()."
    rows = scores("rephrase", ["structure"], [f"{RH}\n{kept}", f"{RH}\n{flattened}", f"{RH}\n"], sources=[source] * 3)
    assert [r["structure"] for r in rows] == [1.0, 0.0, 0.0]


def test_faithfulness_counts_supported_entries_and_zero_without_entries():
    faithful = ("Topic: Conditional execution\nContent: The if statement is used for conditional execution and "
                "selects exactly one of the suites.")
    invented = "Topic: History\nContent: The if statement was invented in 1957 by Grace Hopper at IBM."
    rows = scores("reformat", ["faithfulness"], [f"{FH}\n{faithful}\n\n{invented}", f"{FH}\n{faithful}",
                                                f"{FH}\njust prose, no entries", ""])
    assert [r["faithfulness"] for r in rows] == [0.5, 1.0, 0.0, 0.0]


def test_faithfulness_reads_one_line_entries_as_written():
    faithful = ("Topic: Conditional execution Content: The if statement is used for conditional execution and "
                "selects exactly one of the suites.")
    invented = "Topic: History Content: The if statement was invented in 1957 by Grace Hopper at IBM."
    rows = scores("reformat", ["faithfulness"], [f"{FH}\n{faithful}\n{invented}"])
    assert [r["faithfulness"] for r in rows] == [0.5]


def test_quality_prefers_the_clean_output_and_punishes_empty_ones():
    shuffled = " ".join(sorted(PARAPHRASE.split()))
    rows = scores("rephrase", ["quality"], [f"{RH}\n{PARAPHRASE}", f"{RH}\n{shuffled}", f"{RH}\n", ""])
    clean, noisy, empty, missing = (r["quality"] for r in rows)
    assert clean > noisy > empty and empty == missing < 0


def test_influence_of_a_short_output_is_zero_without_any_model():
    rewards, _ = build_rewards(spec(), "rephrase", names=["influence"], check=False)
    assert rewards[0]([f"{RH}\n{PARAPHRASE[:100]}", ""], source=[SOURCE, SOURCE]) == [0.0, 0.0]


def test_rewards_take_trl_shaped_calls_and_pickle():
    rewards, weights = build_rewards(spec(), "rephrase", names=["format", "length", "quality"])
    assert [r.__name__ for r in rewards] == ["quality", "length", "format"] and weights == [1.0, 1.0, 1.0]  # spec order
    chat = [[{"role": "assistant", "content": f"{RH}\n{PARAPHRASE}"}]]
    restored = pickle.loads(pickle.dumps(rewards))
    assert [r(chat, source=[SOURCE], prompts=["p"], completion_ids=[[1]])[0] for r in restored[1:]] == [1.0, 1.0]


def test_default_rewards_follow_the_paper():
    s = spec()
    from synpro.rewards.scoring import weights_for

    assert weights_for(s, "rephrase") == {"influence": 3.0, "quality": 1.0, "similarity": 1.0, "structure": 1.0,
                                          "length": 1.0, "format": 1.0}
    assert weights_for(s, "reformat") == {"influence": 3.0, "faithfulness": 1.0, "quality": 1.0, "format": 1.0}


def test_bad_reward_names_and_weights_are_located():
    s = spec("rewards: {weights: {rephrase: {quality: 1, faithfulness: 1, fluffiness: 2}, summary: {format: 1}}}")
    problems = {p.key: p.message for p in reward_problems(s)}
    assert "does not apply to a rephrase" in problems["rewards.weights.rephrase.faithfulness"]
    assert "unknown reward 'fluffiness'" in problems["rewards.weights.rephrase.fluffiness"]
    assert "not in generation.operations" in problems["rewards.weights.summary"]
    with pytest.raises(InputError):
        build_rewards(s, "rephrase")
    with pytest.raises(InputError, match="no 'faithfulness' reward"):
        build_rewards(spec(), "rephrase", names=["faithfulness"])


def test_an_unloadable_judge_is_an_input_error(tmp_path):
    extra = (f"rewards: {{quality: {{scorer: llm, judge: {{model: '{tmp_path / 'none'}', prompt: 'Rate {{text}}'}}}}}}")
    with pytest.raises(InputError) as err:
        build_rewards(spec(extra), "rephrase", names=["quality"])
    assert err.value.problems[0].key == "rewards.quality.judge.model"


def test_an_unparseable_rating_scores_zero_and_is_counted(random_model):
    extra = (f"rewards: {{quality: {{scorer: llm, judge: {{model: '{random_model}', prompt: 'Rate 1-5: {{text}}', "
             f"score_regex: 'SCORE=([1-5])', max_new_tokens: 4}}}}}}")
    rewards, _ = build_rewards(spec(extra), "rephrase", names=["quality"])
    assert rewards[0]([f"{RH}\n{PARAPHRASE}"], source=[SOURCE]) == [0.0]
    assert rewards[0].failures == 1


def test_an_unreachable_judge_endpoint_is_an_input_error():
    extra = ("rewards: {structure: {scorer: llm, judge: {model: m, endpoint: 'http://127.0.0.1:9/v1', timeout_seconds: 2, "
             "prompt: 'Same layout? {source} {output}'}}}")
    with pytest.raises(InputError) as err:
        build_rewards(spec(extra), "rephrase", names=["structure"])
    assert err.value.problems[0].key == "rewards.structure.judge.endpoint"


def test_an_unparseable_verdict_leaves_the_entry_unsupported(random_model):
    extra = (f"rewards: {{faithfulness: {{scorer: llm, judge: {{model: '{random_model}', prompt: '{{source}} {{entry}}', "
             f"score_regex: 'VERDICT=([01])', max_new_tokens: 4}}}}}}")
    rewards, _ = build_rewards(spec(extra), "reformat", names=["faithfulness"])
    entries = f"{FH}\nTopic: If\nContent: It selects a suite.\n\nTopic: Else\nContent: It runs last."
    assert rewards[0]([entries], source=[SOURCE]) == [0.0] and rewards[0].failures == 2
    with pytest.raises(InputError, match=r"no \{entry\} slot"):
        build_rewards(spec(extra.replace("{entry}", "")), "reformat", names=["faithfulness"])


def test_reward_settings_name_versions_weights_and_scorers():
    from synpro.rewards.scoring import reward_settings

    rewards, weights = build_rewards(spec("rewards: {weights: {rephrase: {similarity: 2, length: 0.5}}}"), "rephrase",
                                     check=False)
    settings = reward_settings(rewards, weights)
    assert settings["similarity"] == {"weight": 2.0, "version": 1, "scorer": "all-MiniLM-L6-v2", "threshold": 0.65,
                                      "continuous": False}
    assert settings["length"] == {"weight": 0.5, "version": 1, "max_ratio": 1.25, "min_ratio": 0.0}


def test_validation_locates_reward_problems_in_the_file(tmp_path):
    from synpro.resolve import resolve
    from synpro.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(BASE + "rewards:\n  weights:\n    reformat:\n      length: 1\n")
    with pytest.raises(InputError) as err:
        resolve(load_spec(path), machine=False)
    problem = err.value.problems[0]
    assert (problem.key, problem.line) == ("rewards.weights.reformat.length", 6) and "remove its weight" in problem.message
