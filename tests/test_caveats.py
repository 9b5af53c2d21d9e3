"""Every figure says what it rests on: synthetic share (and the floor), accuracy against chance, and tables
that fit a terminal without cutting a number; through the real CLI on a real SQLite store."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from store import Store
from synpro.caveats import at_chance, chance_range
from synpro.display import fmt
import warm_cli

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
TOTAL = 245_760
# As the issue found the quickstart: 196 four-choice cloze items, accuracies 0.214-0.25 (chance 0.25) except
# the oracle; the synpro arm saw 56 synthetic tokens. Accuracy basis as `synpro.pipeline` records it.
BASIS = {"accuracy_items": {"synpro_cloze": 196}, "accuracy_chance": {"synpro_cloze": 0.25}}
ARMS = {  # name: (kind, synthetic tokens seen or None (stored before synthetic usage), accuracy, D_eff by accuracy)
    "repetition": ("repetition", None, 0.40, 100_000.0),
    "oracle": ("oracle", None, 0.42, 245_760.0),
    "prompted": ("prompted", 24_576, 0.45, 200_000.0),
    "synpro": ("synpro", 56, 0.214, 241_664.0),
}


def populate(path: Path, *, lrs=(0.003, 0.01), arms=ARMS, multiplier_in_first_only: bool = False) -> None:
    """A two-trial study stored the way a sweep stores it (arms, details, accuracy), with the quickstart spec."""
    with Store(f"sqlite:///{path / 'synpro.db'}") as db:
        study = db.upsert_study("quickstart", (EXPERIMENTS / "quickstart.yaml").read_text(),
                                {"arm": "synpro", "metric": "multiplier_vs_repetition", "direction": "maximize"})
        for number, lr in enumerate(lrs):
            trial = db.upsert_trial(study, f"lr-{lr}", {"training.lr": lr}, optuna_number=number)
            for name, (kind, synthetic, accuracy, d_eff_acc) in arms.items():
                arm = db.upsert_arm(trial, name, kind, "cfg", 40_000 if kind != "oracle" else TOTAL, TOTAL)
                details = dict(BASIS)
                if synthetic is not None:
                    details.update(synthetic_tokens=synthetic, synthetic_share=synthetic / TOTAL, synthetic_sets={
                        "rephrase-r1": {"operation": "rephrase", "tokens": 60, "tokens_seen": synthetic,
                                        "pass_rate": 0.08, "heldout_pass_rate": None}})
                multiplier = None if multiplier_in_first_only and number else 0.9951 + number / 10
                db.set_arm_result(arm, final_val_loss=3.14159 + number, tokens_seen=TOTAL,
                                  effective_tokens=123_456.7 * (1 + number), effective_tokens_extrapolated=False,
                                  multiplier_vs_repetition=multiplier, details=details)
                db.set_arm_accuracy(arm, final_accuracy=accuracy, effective_tokens_accuracy=d_eff_acc,
                                    effective_tokens_accuracy_extrapolated=False, multiplier_accuracy=None)
            db.set_trial_analysis(trial, {"reference": {"kind": "trial", "arm": "oracle"}, "arms": {}})
            db.finish_trial(trial, "finished", objective_value=0.9951)


def cli(*args: str, columns: int | None = None) -> str:
    """The command's output, with COLUMNS set to `columns` (piped: CliRunner captures stdout)."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)} if columns else {})
    assert result.exit_code == 0, result.output
    return result.output


def piped(*args: str, columns: int) -> str:
    """From the real entry point in a fresh process, stdout piped, as `COLUMNS=100 synpro results | less`."""
    piped = warm_cli.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": str(columns)})
    assert piped.returncode == 0, piped.stderr
    return piped.stdout


def test_chance_range_follows_the_item_count():
    band = chance_range({"cloze": 0.25}, {"cloze": 196})
    assert band == pytest.approx((0.25 - 0.0606, 0.25 + 0.0606), abs=1e-3)
    assert at_chance(0.214, band) and at_chance(0.25, band) and not at_chance(0.32, band)
    assert not at_chance(0.214, chance_range({"cloze": 0.25}, {"cloze": 20_000}))  # more items, narrower
    # The average of two tasks varies less than either: its range is narrower than one task's.
    two = chance_range({"a": 0.25, "b": 0.5}, {"a": 196, "b": 196})
    assert two[1] - two[0] < band[1] - band[0] and sum(two) / 2 == pytest.approx(0.375)
    assert chance_range({"a": 0.25}, {}) is None and at_chance(0.3, None) is None


def test_every_arm_says_its_synthetic_share_and_accuracy_at_chance_is_never_an_effective_token_count(tmp_path):
    populate(tmp_path)
    trials = json.loads(cli("results", "--workdir", str(tmp_path), "--format", "json"))
    for trial in trials:
        arms = trial["arms"]
        # stored before synthetic usage existed: still 0 for the arms that train on organic text only
        assert arms["repetition"]["synthetic_share"] == arms["oracle"]["synthetic_share"] == 0.0
        assert arms["synpro"]["synthetic_share"] == pytest.approx(56 / TOTAL)
        assert arms["synpro"]["synthetic_set_shares"]["rephrase-r1"]["share"] == pytest.approx(56 / TOTAL)
        assert arms["synpro"]["synthetic_below_floor"] and not arms["prompted"]["synthetic_below_floor"]
        assert not arms["repetition"]["synthetic_below_floor"]
        # 0.214 on 196 four-choice items is chance: no D_eff or multiplier by accuracy from it
        assert arms["synpro"]["accuracy_at_chance"] and arms["synpro"]["accuracy_caveat"] == "at chance"
        assert arms["synpro"]["effective_tokens_accuracy"] is None and arms["synpro"]["multiplier_accuracy"] is None
        assert arms["synpro"]["accuracy_basis"]["from"] == "evaluation"
        # off chance, with repetition's D_eff by accuracy too: the multiplier by accuracy is shown
        assert arms["prompted"]["accuracy_at_chance"] is False
        assert arms["prompted"]["multiplier_accuracy"] == pytest.approx(2.0)
        assert arms["oracle"]["effective_tokens_accuracy"] == 245_760.0

    table = piped("results", "--workdir", str(tmp_path), columns=100)
    assert max(len(line) for line in table.splitlines()) <= 100
    rows = {line.split("│")[2].strip(): line for line in table.splitlines() if line.count("│") > 3
            and line.split("│")[2].strip() in ARMS}
    assert "0.02%" in rows["synpro"] and "10.00%" in rows["prompted"] and "0%" in rows["oracle"]
    assert "at chance" in rows["synpro"]
    flat = " ".join(table.split())
    assert "≈ repetition by construction" in flat
    assert f"trial 0 synpro: synthetic share 0.02% (56 tokens) is under the floor 1.00%" in flat
    assert "trial 0 synpro: accuracy 0.214 (chance's 95% range 0.189-0.311): at chance" in flat
    for trial in trials:  # every number the narrow table shows is whole
        for arm in trial["arms"].values():
            for key in ("final_val_loss", "effective_tokens"):
                assert re.search(rf"(?<![\d,.]){re.escape(fmt(arm[key]))}(?![\d,.])", table), (key, fmt(arm[key]))

    # A lower floor flags nothing; CSV carries the share and the flags beside the figures.
    assert "under the floor" not in cli("results", "--workdir", str(tmp_path), "--synthetic-floor", "0.0001")
    rows = list(csv.DictReader(io.StringIO(cli("results", "--workdir", str(tmp_path), "--format", "csv"))))
    synpro = next(r for r in rows if r["arm"] == "synpro")
    assert float(synpro["synthetic_share"]) == pytest.approx(56 / TOTAL) and synpro["accuracy_at_chance"] == "True"


def test_a_narrow_terminal_gets_fewer_columns_never_cut_numbers_and_columns_choose(tmp_path):
    populate(tmp_path)
    narrow = cli("results", "--workdir", str(tmp_path), columns=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert "left out to fit 60 columns:" in narrow and "…" not in narrow
    assert "trial 1: training.lr=0.01" in narrow  # the params column left out: said under the table
    chosen = cli("results", "--workdir", str(tmp_path), "--columns", "arm,loss", columns=200)
    header = next(line for line in chosen.splitlines() if "arm" in line and "┃" in line)
    assert [h.strip() for h in header.split("┃") if h.strip()] == ["trial", "arm", "val loss"]
    bad = CliRunner().invoke(app, ["results", "--workdir", str(tmp_path), "--columns", "arm,nope"])
    assert bad.exit_code == 2 and "unknown column(s) nope" in bad.output


def test_compare_shows_a_row_per_trial_unless_asked_to_average(tmp_path):
    populate(tmp_path, multiplier_in_first_only=True)
    by_trial = cli("compare", "--workdir", str(tmp_path), "--out", str(tmp_path / "plots"), columns=200)
    assert "per trial" in by_trial and "means over trials" not in by_trial
    assert "training.lr=0.003" in by_trial and "training.lr=0.01" in by_trial
    assert by_trial.count("synpro ") >= 2  # one row per trial
    across = cli("compare", "--workdir", str(tmp_path), "--out", str(tmp_path / "plots"), "--across-trials",
                 columns=200)
    assert "means over trials" in across and "0.9951 (1/2 trials)" in " ".join(across.split())


def test_a_terminal_narrower_than_the_kept_columns_gets_longer_lines_not_cut_numbers(tmp_path):
    populate(tmp_path)
    tiny = cli("results", "--workdir", str(tmp_path), "--columns", "arm,d_eff", columns=20)
    header = next(line for line in tiny.splitlines() if "┃" in line and "trial" in line)
    assert [h.strip() for h in header.split("┃") if h.strip()] == ["trial", "arm", "D_eff"]
    assert "123,457" in tiny and "246,913" in tiny
