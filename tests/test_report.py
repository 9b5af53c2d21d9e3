"""`synpro report` shows what a reader needs to trust the numbers: accuracy, what each synthetic set
was (pass rate, rejections by reason, sizes, samples), links to the MLflow runs, the spec folded away."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from store import Store

runner = CliRunner()
SOURCES = ["The assert statement checks a condition.", "Lists hold items in order.", "A dict maps keys.",
           "Tuples cannot change."]


def write_set(folder: Path) -> None:
    """A synthetic set's files as `make_set` leaves them: one output passed, three rejected."""
    folder.mkdir(parents=True)
    records = [{"window": f"0:{i}", "source": text, "raw": [f"raw answer {i}"], "text": "Clear: " + text if i == 0
                else "", "failures": [] if i == 0 else ["truncated", "low_similarity"][: i % 2 + 1], "passed": i == 0}
               for i, text in enumerate(SOURCES)]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    stats = {"operation": "rephrase", "complete": True, "windows": 4, "chunks": 4, "passed": 1, "pass_rate": 0.25,
             "failures": {"empty": 0, "truncated": 3, "low_similarity": 1}, "generated_tokens": 900,
             "output_tokens": 37}
    (folder / "stats.json").write_text(json.dumps({"stats": stats, "metrics": {}}))
    (folder / "_stage.json").write_text(json.dumps({"kind": "synthesize", "config": {"generator": "grpo-abc"}}))


def test_report_has_accuracy_synthetic_sets_run_links_and_a_folded_spec(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    write_set(workdir / "stages" / "synthesize-0f60d4")
    url = f"sqlite:///{workdir / 'synpro.db'}"
    with Store(url) as store:
        study = store.upsert_study("qs", "experiment: {name: qs}\nbudget: {unique_tokens: 40000}\n",
                                   {"arm": "synpro", "metric": "multiplier_vs_repetition", "direction": "maximize"})
        trial = store.upsert_trial(study, "h0", {"training.lr": 0.003}, optuna_number=0)
        for name, run_id in (("repetition", "aaaabbbbcccc"), ("synpro", "ddddeeeeffff")):
            arm = store.upsert_arm(trial, name, name, f"cfg-{name}", 40000, 240000, mlflow_run_id=run_id)
            store.add_evaluations(arm, [{"tokens": t, "step": t // 2048, "val_loss": 6.0 - t / 1e5}
                                        for t in (20480, 40960)])
            sets = {"rephrase": {"operation": "rephrase", "set": "synthesize-0f60d4", "tokens": 37,
                                 "tokens_seen": 74, "pass_rate": 0.25}} if name == "synpro" else {}
            store.set_arm_result(arm, final_val_loss=5.6, tokens_seen=40960, effective_tokens=40000.0,
                                 effective_tokens_extrapolated=False, multiplier_vs_repetition=1.0,
                                 details={"synthetic_sets": sets})
            store.set_arm_accuracy(arm, final_accuracy=0.25, effective_tokens_accuracy=None,
                                   effective_tokens_accuracy_extrapolated=None, multiplier_accuracy=None)
        store.finish_trial(trial, "finished", 1.0)
    result = runner.invoke(app, ["report", "--workdir", str(workdir), "--study", "qs"])
    assert result.exit_code == 0, result.output
    page = (workdir / "reports" / "qs.html").read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    assert "Downstream accuracy" in page and "0.25" in text
    # The set: its pass rate, rejections by reason (most first), sizes, who trained on it, three samples.
    assert "synthesize-0f60d4" in page and "grpo-abc" in page
    assert "truncated 3, low_similarity 1" in text and "empty" not in text.split("Synthetic data")[1].split("Fits")[0]
    assert "synpro (trial #0, seed 0): 74 tokens seen" in text
    samples = text.split("synthesize-0f60d4")[1]
    assert "Clear: The assert statement" in samples and "raw answer 1" in samples and "raw answer 2" in samples
    assert "raw answer 3" not in samples  # three samples, the passed one first
    assert "rejected: truncated, low_similarity" in samples
    # Every arm links to its MLflow run where `synpro ui` serves it; nothing else is linked or loaded.
    links = re.findall(r'href="([^"]+)"', page)
    assert sorted(links) == ["http://127.0.0.1:5000/#/runs/aaaabbbbcccc", "http://127.0.0.1:5000/#/runs/ddddeeeeffff"]
    assert 'src="http' not in page and "<script" not in page
    # The spec is there, folded away.
    assert re.search(r"<details><summary>[^<]*spec[^<]*</summary><pre>[^<]*unique_tokens: 40000", page)
