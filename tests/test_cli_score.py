"""`synpro probe`, `synpro score` and their exit codes, on a tiny random OLMo-2 checkpoint made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
SOURCE = ("The if statement is used for conditional execution. It selects exactly one of the suites by evaluating "
          "the expressions one by one until one is found to be true; then that suite is executed. ") * 4
OUTPUT = "Here is a paraphrased version:\n" + SOURCE.replace("is used for", "serves")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A spec with a 2-step probe on a 6-pair JSONL reference set, a random tiny checkpoint, a pairs file."""
    from pydoc_data.topics import topics
    from transformers import Olmo2ForCausalLM

    from synpro.data.tokenizer import save_tokenizer, train_bpe
    from synpro.models import ModelSpec

    root = tmp_path_factory.mktemp("score")
    vocab = save_tokenizer(train_bpe([topics[k] for k in sorted(topics)[:10]], 400), root / "tokenizer")
    torch.manual_seed(0)
    Olmo2ForCausalLM(ModelSpec(preset="tiny").hf_config(vocab, 128)).save_pretrained(str(root / "theta"))
    (root / "ref.jsonl").write_text("".join(json.dumps({"prompt": f"Question {i}?", "response": f"Answer {i}."}) + "\n"
                                            for i in range(6)))
    (root / "spec.yaml").write_text(
        f"experiment: {{name: s, workdir: '{root / 'work'}'}}\nbudget: {{unique_tokens: 1000, total_tokens: 2000}}\n"
        "probe: {steps: 2, batch_size: 2, max_tokens: 64, eval_examples: 2, reference: {source: jsonl, path: ref.jsonl}}\n"
        "influence: {max_tokens: 64}\nrewards: {influence_min_chars: 100}\n")
    (root / "pairs.jsonl").write_text(json.dumps({"source": SOURCE, "output": OUTPUT}) + "\n"
                                      + json.dumps({"source": SOURCE, "output": ""}) + "\n")
    return root


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_probe_prints_theta_prime_and_the_loss(workspace):
    result = invoke("probe", workspace / "spec.yaml", "--checkpoint", workspace / "theta",
                    "--tokenizer", workspace / "tokenizer")
    assert result.exit_code == 0, result.output
    assert "θ′:" in result.output and "reference loss" in result.output and "→" in result.output
    again = invoke("probe", workspace / "spec.yaml", "--checkpoint", workspace / "theta", "--tokenizer", workspace / "tokenizer")
    assert "(reused)" in again.output


def test_score_json_carries_every_default_reward_and_the_total(workspace):
    result = invoke("score", workspace / "spec.yaml", "--input", workspace / "pairs.jsonl", "--format", "json",
                    "--checkpoint", workspace / "theta", "--tokenizer", workspace / "tokenizer")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert list(rows[0]) == ["influence", "quality", "similarity", "structure", "length", "format", "total"]
    assert rows[0]["influence"] != 0 and rows[1]["influence"] == 0 and rows[1]["format"] == 0
    weights = {"influence": 3}
    assert rows[0]["total"] == pytest.approx(sum(weights.get(k, 1) * v for k, v in rows[0].items() if k != "total"))


@pytest.mark.parametrize("args, needle", [
    (["--rewards", "nonsense"], "unknown reward"),
    (["--rewards", "faithfulness"], "no 'faithfulness' reward"),
    (["--operation", "summary"], "unknown operation"),
    ([], "needs θ and its probe"),
    (["--rewards", "format", "--format", "xml"], "unknown format"),
])
def test_score_bad_input_exits_2(workspace, args, needle):
    result = invoke("score", workspace / "spec.yaml", "--input", workspace / "pairs.jsonl", *args)
    assert result.exit_code == 2 and needle in result.output, result.output


def test_score_bad_lines_and_bad_probes_exit_2(workspace, tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"source": "a"}) + "\n")
    result = invoke("score", workspace / "spec.yaml", "--input", tmp_path / "bad.jsonl", "--rewards", "format")
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output and "output" in result.output
    result = invoke("probe", workspace / "spec.yaml", "--checkpoint", tmp_path / "missing", "--tokenizer", workspace / "tokenizer")
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = invoke("probe", workspace / "spec.yaml", "--arm", "nope")
    assert result.exit_code == 2 and "no arm 'nope'" in result.output
    (tmp_path / "spec.yaml").write_text((workspace / "spec.yaml").read_text().replace("ref.jsonl", str(tmp_path / "bad.jsonl")))
    result = invoke("probe", tmp_path / "spec.yaml", "--checkpoint", workspace / "theta", "--tokenizer", workspace / "tokenizer")
    assert result.exit_code == 2 and "probe.reference.prompt_field" in result.output


def test_score_asks_a_running_influence_service_when_the_spec_names_one(workspace, tmp_path):
    import threading

    from synpro.influence.probe import probe_from_spec
    from synpro.influence.scoring import InfluenceScorer
    from synpro.influence.service import make_server
    from synpro.spec import load_spec

    spec = load_spec(workspace / "spec.yaml")
    probe = probe_from_spec(spec, workspace / "theta", workspace / "tokenizer")
    server = make_server(InfluenceScorer(workspace / "theta", probe.out_dir, workspace / "tokenizer", max_tokens=64),
                         "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "spec.yaml").write_text((workspace / "spec.yaml").read_text().replace(
            "ref.jsonl", str(workspace / "ref.jsonl")).replace(
            "influence: {max_tokens: 64}", f"influence: {{max_tokens: 64, url: 'http://127.0.0.1:{server.server_address[1]}'}}"))
        result = invoke("score", tmp_path / "spec.yaml", "--input", workspace / "pairs.jsonl", "--format", "json",
                        "--rewards", "influence,format")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["influence"] != 0 and rows[0]["total"] == pytest.approx(3 * rows[0]["influence"] + 1)
