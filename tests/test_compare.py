"""The analysis CLI contract (fit, compare, report) and comparisons that stay fast at thousands of runs."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli.main import app
from store import Store
from store.schema import Arm, Evaluation, Trial
from synpro.scaling import MUENNIGHOFF_C4
from test_fits import BOOTSTRAP, SPEC, STUDY, TOTAL, populate
import warm_cli

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAME_ENDS = re.compile(r"\[\s*([-+0-9.e,]+), \1\s*\]")  # "[15.39, 15.39]": an interval shown zero-width


def no_zero_width(found: object) -> None:
    """Fail on any interval, anywhere in a JSON payload, whose ends are equal."""
    if isinstance(found, dict):
        for key, value in found.items():
            if key in ("ci", "r_d_star_ci", "unique_value_ci") and value is not None:
                pairs = value.values() if isinstance(value, dict) else [value]
                assert all(lo < hi for lo, hi in pairs), (key, value)
            no_zero_width(value)
    elif isinstance(found, list):
        for value in found:
            no_zero_width(value)


def write_c4_points(path: Path) -> None:
    """Points of Muennighoff's published C4 law: model sizes x unique data x epochs, some of the
    models beyond compute-optimal for their data (so R_N* is identifiable)."""
    grid = np.meshgrid(np.logspace(7, 10, 5), np.logspace(9, 12, 5), [1.0, 4.0, 16.0, 40.0])
    N, U, epochs = (a.ravel() for a in grid)
    L = MUENNIGHOFF_C4.predict(N, U * epochs, U)
    rows = ["params,tokens,unique_tokens,loss"] + [f"{n!r},{d!r},{u!r},{l!r}" for n, d, u, l in zip(
        N.tolist(), (U * epochs).tolist(), U.tolist(), L.tolist())]
    path.write_text("\n".join(rows) + "\n")


# ---- synpro fit --points ------------------------------------------------------------------------


def test_fit_points_json_contract_recovers_the_published_c4_law(tmp_path: Path) -> None:
    """Through the real entry point, as another tool would call it."""
    points = tmp_path / "c4.csv"
    write_c4_points(points)
    result = warm_cli.run([sys.executable, "-m", "cli", "fit", "--points", str(points), "--law",
                             "data-constrained", "--tie-exponents", "--format", "json"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["law"] == "data-constrained" and payload["n_points"] == 100
    truth = MUENNIGHOFF_C4.constants()
    assert set(payload["constants"]) == set(payload["identified"]) == set(truth)
    for name, value in truth.items():
        assert payload["constants"][name] == pytest.approx(value, rel=1e-2), name
        assert payload["identified"][name] == {"identified": True, "reason": None}
    # No bootstrap, no interval: never the estimate twice.
    assert payload["ci"] is None and payload["interval"] is None
    assert payload["residual_spread"] < 1e-5 and payload["points_per_free_constant"] == 100 / 6
    assert payload["loss"] < 1e-6 and payload["settings"]["tie_exponents"] is True


def test_fit_points_with_a_bootstrap_gives_every_fitted_constant_an_interval_and_a_flag(tmp_path: Path) -> None:
    points = tmp_path / "c4.csv"
    write_c4_points(points)
    result = runner.invoke(app, ["fit", "--points", str(points), "--law", "chinchilla", "--freeze", "E=1.8691",
                                 "--bootstrap", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["ci"]) == set(payload["identified"]) == {"A", "B", "alpha", "beta"}
    assert payload["interval"] == {"method": "percentile bootstrap", "n": 4, "level": 0.95, "seed": 0,
                                   "no_spread": []}
    assert all("identified" in flag for flag in payload["identified"].values())
    no_zero_width(payload)


def test_fit_points_table_marks_frozen_constants(tmp_path: Path) -> None:
    points = tmp_path / "c4.csv"
    write_c4_points(points)
    result = runner.invoke(app, ["fit", "--points", str(points), "--law", "chinchilla", "--freeze", "E=1.8691"])
    assert result.exit_code == 0, result.output
    assert "chinchilla law fitted to 100 points" in result.output
    assert "frozen" in result.output and "fitted" in result.output
    assert result.output.count("no interval (use --bootstrap N)") == 4  # A, B, alpha, beta; E is frozen
    assert "points per free constant" in result.output and "Residual spread" in result.output


BAD_CSV = {
    "missing-column": ("params,tokens,loss\n1e8,1e9,3.0\n", "missing column(s) unique_tokens", None),
    "not-a-number": ("params,tokens,unique_tokens,loss\n1e8,1e9,1e9,3.0\n1e8,lots,1e9,2.9\n",
                     "row 2: tokens 'lots' is not a number", "bad.csv:3 [tokens]"),
    "non-positive": ("params,tokens,unique_tokens,loss\n1e8,1e9,1e9,3.0\n1e8,2e9,1e9,-2.9\n",
                     "row 2: loss must be a finite positive number, got '-2.9'", "bad.csv:3 [loss]"),
    "too-few": ("params,tokens,unique_tokens,loss\n1e8,1e9,1e9,3.0\n2e8,2e9,1e9,2.9\n",
                "2 points cannot fit", None),
    "empty": ("params,tokens,unique_tokens,loss\n", "no data rows", None),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_exits_2_with_a_clear_message(tmp_path: Path, case: str) -> None:
    text, message, location = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = runner.invoke(app, ["fit", "--points", str(path), "--law", "data-constrained"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and str(path) in result.stderr
    if location:
        assert location in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.splitlines()) < 10


@pytest.mark.parametrize("args, message", [
    (["--law", "chinchilla"], "exactly one of --points"),
    (["--points", "p.csv"], "--law chinchilla or --law data-constrained"),
    (["--points", "p.csv", "--law", "chinchilla", "--freeze", "E"], "not NAME=VALUE"),
    (["--points", "nowhere.csv", "--law", "chinchilla"], "cannot read the points"),
    (["--study", "s", "--law", "chinchilla", "--store", "sqlite:///x.db"], "--law applies to --points"),
])
def test_bad_fit_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "p.csv").write_text("params,tokens,unique_tokens,loss\n")
    result = runner.invoke(app, ["fit", *[str(tmp_path / a) if a.endswith(".csv") else a for a in args]])
    assert result.exit_code == 2 and message in result.stderr, result.output


# ---- study fits, compare and report on a store populated through the Store API ----------------------


def populated(tmp_path: Path) -> str:
    """A three-trial study whose last trial also carries effective tokens, like a finished sweep."""
    url = f"sqlite:///{tmp_path / 'wd' / 'synpro.db'}"
    with Store(url) as store:
        ids = populate(store, widths=(64, 128, 256))
        last = [p for p in store.curves(STUDY) if p["trial"] == 2]
        for arm, (d_eff, multiplier) in {"oracle": (2e9, 8.0), "repetition": (2.5e8, 1.0),
                                         "synthetic": (1e9, 4.0)}.items():
            curve = [p for p in last if p["arm"] == arm]
            store.add_evaluations(ids[arm], [{"tokens": p["tokens"], "step": p["step"], "val_loss": p["val_loss"],
                                              "effective_tokens": d_eff * p["tokens"] / TOTAL,
                                              "effective_tokens_extrapolated": i == 0} for i, p in enumerate(curve)])
            store.set_arm_result(ids[arm], final_val_loss=curve[-1]["val_loss"], tokens_seen=int(TOTAL),
                                 effective_tokens=d_eff, effective_tokens_extrapolated=False,
                                 multiplier_vs_repetition=multiplier)
    return url


def test_study_fit_then_compare_and_report(tmp_path: Path) -> None:
    url = populated(tmp_path)
    fitted = runner.invoke(app, ["fit", "--store", url, "--study", STUDY, "--format", "json"])
    assert fitted.exit_code == 0, fitted.output
    payload = json.loads(fitted.stdout)
    no_zero_width(payload)
    by_arm = {f["arm"]: f for f in payload["fits"]}
    assert by_arm["oracle"]["law"] == "chinchilla" and by_arm["repetition"]["law"] == "recipe"
    assert by_arm["repetition"]["constants"]["R_D_star"] == pytest.approx(15.388, rel=0.15)
    assert by_arm["repetition"]["frozen_why"]["B"].startswith("fitted on the unique-data points")
    # Bootstrapped by default, as many refits as the spec says, and said so.
    assert payload["bootstrap"] == {"n": BOOTSTRAP, "from": "the spec's analysis.bootstrap"}
    for fit in payload["fits"]:
        assert fit["interval"]["n"] == BOOTSTRAP and set(fit["ci"]) == set(fit["identified"])
    assert by_arm["repetition"]["identified"]["R_D_star"]["identified"] is True
    table = runner.invoke(app, ["fit", "--store", url, "--study", STUDY, "--arm", "synthetic"])
    assert table.exit_code == 0, table.output
    assert "synthetic" in table.output and "Saved 2 fit(s)" in table.output
    assert f"percentile bootstrap of {BOOTSTRAP} refits per fit (from the spec's analysis.bootstrap" in table.output
    assert not SAME_ENDS.search(table.output)
    plain = runner.invoke(app, ["fit", "--store", url, "--study", STUDY, "--arm", "synthetic", "--bootstrap", "0"])
    assert plain.exit_code == 0 and "no interval (use --bootstrap N)" in plain.output, plain.output
    assert "No intervals: no bootstrap ran" in plain.output

    out = tmp_path / "plots"
    compared = runner.invoke(app, ["compare", "--store", url, "--out", str(out), "--format", "json"])
    assert compared.exit_code == 0, compared.output
    compared_payload = json.loads(compared.stdout)
    no_zero_width(compared_payload)
    rows = {r["arm"]: r for r in compared_payload["arms"]}
    assert rows["synthetic"]["mean_multiplier"] == 4.0  # known on one trial; the mean skips unknowns
    assert rows["repetition"]["r_d_star"] == pytest.approx(by_arm["repetition"]["constants"]["R_D_star"])
    assert rows["repetition"]["r_d_star_ci"] == pytest.approx(by_arm["repetition"]["ci"]["R_D_star"])
    assert rows["repetition"]["r_d_star_identified"] == {"identified": True, "reason": None}
    assert rows["repetition"]["mean_epochs"] == 40.0 and rows["repetition"]["n_trials"] == 3
    assert 1 < rows["repetition"]["unique_value"] < rows["repetition"]["ceiling"]
    assert rows["oracle"]["r_d_star"] is None
    for name in ("loss_curves.png", "effective_tokens.png", "search.png", "fits.png", "token_worth.png", "multiplier.png"):
        assert (out / STUDY / name).read_bytes().startswith(PNG_MAGIC), name
    shown = runner.invoke(app, ["compare", "--store", url, "--study", STUDY])
    assert shown.exit_code == 0 and "repetition" in shown.output and "R_D*" in shown.output
    assert "identified" in shown.output and not SAME_ENDS.search(shown.output)
    lo, hi = rows["repetition"]["r_d_star_ci"]
    assert f"[{lo:.4g}," in shown.output and f"{hi:.4g}]" in shown.output  # the cell may wrap at 80 columns

    reported = runner.invoke(app, ["report", "--store", url, "--study", STUDY])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "wd" / "reports" / f"{STUDY}.html").read_text()  # default: the workdir's reports/
    assert page.count("data:image/png;base64,") == 6 and 'alt="token_worth.png"' in page
    assert not SAME_ENDS.search(page)
    assert f"{rows['repetition']['r_d_star']:.4g} [{lo:.4g}, {hi:.4g}]" in page
    assert "R_D* identified" in page and f"percentile bootstrap of {BOOTSTRAP} refits" in page
    assert "src=\"http" not in page and "href=" not in page and "<script" not in page  # no external assets
    for text in ("Comparison of arms", "Value of a token, per arm", "Frozen constants", "Results per trial",
                 "model.d_model", "oracle", "repetition", "synthetic", "recipe", "effective"):
        assert text in page, text
    assert "unique_tokens: 40000" in page  # the spec, inline


def test_an_r_d_star_the_runs_cannot_pin_down_is_flagged_in_fit_compare_and_report(tmp_path: Path) -> None:
    """Every evaluation of the repeated arm at <= 2 epochs, its R_D* a large 60: flagged everywhere."""
    url = f"sqlite:///{tmp_path / 'wd' / 'synpro.db'}"
    with Store(url) as store:
        populate(store, arms=("oracle", "repetition"), r_d_star={"repetition": 60.0}, unique=TOTAL / 2)
    fitted = runner.invoke(app, ["fit", "--store", url, "--study", STUDY])
    assert fitted.exit_code == 0, fitted.output
    assert "no: held at" in fitted.output and not SAME_ENDS.search(fitted.output)
    compared = runner.invoke(app, ["compare", "--store", url, "--out", str(tmp_path / "plots"), "--format", "json"])
    [row] = [r for r in json.loads(compared.stdout)["arms"] if r["arm"] == "repetition"]
    assert row["r_d_star_identified"]["identified"] is False
    assert "do not bound it from above" in row["r_d_star_identified"]["reason"]
    shown = runner.invoke(app, ["compare", "--store", url, "--out", str(tmp_path / "plots")])
    assert "no: held at" in shown.output, shown.output
    reported = runner.invoke(app, ["report", "--store", url, "--study", STUDY])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "wd" / "reports" / f"{STUDY}.html").read_text()
    assert "no: held at" in page and not SAME_ENDS.search(page)


def test_compare_and_report_name_unknown_studies(tmp_path: Path) -> None:
    url = populated(tmp_path)
    for command in (["compare", "--store", url, "--study", "nope"], ["report", "--store", url, "--study", "nope"],
                    ["fit", "--store", url, "--study", "nope"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and f"known studies: {STUDY}" in result.stderr, result.output


def test_study_fit_is_logged_to_the_studys_mlflow_run(tmp_path: Path) -> None:
    from synpro.tracking import Tracker

    workdir = tmp_path / "wd"
    url = populated(tmp_path)
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", STUDY, workdir / "mlartifacts")
    run = tracker.run("study", STUDY, {"synpro.study": STUDY})
    with Store(url) as store:
        store.upsert_study(STUDY, SPEC, {"arm": "repetition"}, mlflow_run_id=run)
    result = runner.invoke(app, ["fit", "--workdir", str(workdir), "--study", STUDY])
    assert result.exit_code == 0, result.output
    assert "and the study's MLflow run" in result.output
    tags = tracker.client.get_run(run).data.tags
    assert float(tags["synpro.fit.R_D_star.repetition"]) == pytest.approx(15.388, rel=0.15)
    low, high = json.loads(tags["synpro.fit.R_D_star_interval.repetition"])
    assert low <= float(tags["synpro.fit.R_D_star.repetition"]) <= high
    assert tags["synpro.fit.R_D_star_identified.repetition"] == "yes"
    assert [a.path for a in tracker.client.list_artifacts(run)] == ["fits.json"]


# ---- comparisons at thousands of runs ----------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


def bulk_study(store: Store, n_trials: int, evaluations: int) -> dict[str, list[float]]:
    """A study of n_trials x (repetition, oracle) finished arms with curves, inserted in bulk;
    returns each arm's final losses."""
    now = datetime.now(timezone.utc)
    study_id = store.upsert_study("big", "experiment: {name: big}\n", {"arm": "repetition"})
    rng = np.random.default_rng(0)
    finals: dict[str, list[float]] = {"repetition": [], "oracle": []}
    with store.engine.begin() as conn:
        conn.execute(sa.insert(Trial), [
            {"study_id": study_id, "params_hash": f"h{i}", "optuna_number": i,
             "params": {"training.lr": 1e-3 * (i + 1)}, "state": "finished", "objective_value": 3.0,
             "heartbeat_at": now, "started_at": now}
            for i in range(n_trials)])
        trials = conn.execute(sa.select(Trial.id).where(Trial.study_id == study_id).order_by(Trial.id)).scalars().all()
        arms = []
        for trial in trials:
            for name in finals:
                loss = float(rng.uniform(3.0, 4.0))
                finals[name].append(loss)
                arms.append({"trial_id": trial, "name": name, "kind": name, "config_hash": "cfg",
                             "unique_tokens": 10**6 if name == "repetition" else 4 * 10**6,
                             "total_tokens": 4 * 10**6,
                             "state": "finished", "final_val_loss": loss, "tokens_seen": 4 * 10**6,
                             "effective_tokens": 1e6, "multiplier_vs_repetition": 1.0})
        conn.execute(sa.insert(Arm), arms)
        arm_ids = conn.execute(sa.select(Arm.id).join(Trial).where(Trial.study_id == study_id)).scalars().all()
        conn.execute(sa.insert(Evaluation), [
            {"arm_id": arm, "tokens": (k + 1) * 10**6, "step": k, "val_loss": 4.0 - k / 10}
            for arm in arm_ids for k in range(evaluations)])
    for k in range(20):  # a history of fits: the comparison must pick the newest
        store.add_fit(study_id, arm="repetition", law="recipe", constants={"R_D_star": float(k + 1)},
                      ci={"R_D_star": (k + 0.5, k + 2.0)}, interval={"method": "percentile bootstrap", "n": 10},
                      identified={"R_D_star": {"identified": k % 2 == 1, "reason": None if k % 2 else "flat"}},
                      residual_spread=0.01, points_per_free_constant=4.0, loss=0.0, n_points=4,
                      inputs_hash=f"fit-{k}", settings={}, residuals=[], trial_ids=trials[:3])
    return finals


def test_compare_is_right_at_thousands_of_runs(url: str) -> None:
    """Correctness at scale; its speed (the 1-second target) is `benchmarks/compare_scale.py`'s to measure."""
    n_trials, evaluations = 2_500, 4
    with Store(url) as store:
        finals = bulk_study(store, n_trials, evaluations)
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM evaluations")).scalar_one() == 20_000
        rows = store.compare("big")
    by_arm = {r["arm"]: r for r in rows}
    assert list(by_arm) == ["repetition", "oracle"]  # registration order
    for arm, losses in finals.items():
        row = by_arm[arm]
        assert (row["n_trials"], row["n_finished"]) == (n_trials, n_trials)
        assert row["mean_final_loss"] == pytest.approx(np.mean(losses))
        assert row["best_final_loss"] == pytest.approx(min(losses))
    assert by_arm["repetition"]["r_d_star"] == 20.0 and by_arm["repetition"]["mean_epochs"] == 4.0
    assert by_arm["repetition"]["r_d_star_ci"] == [19.5, 21.0]
    assert by_arm["repetition"]["r_d_star_identified"] == {"identified": True, "reason": None}
    assert by_arm["oracle"]["r_d_star"] is None and by_arm["oracle"]["mean_epochs"] == 1.0


def _grpo_steps(rewards: tuple[str, ...]) -> list[dict]:
    """A GRPO run's metrics.jsonl rows as the trainer writes them: held-out evaluations and train steps."""
    rows = [{"kind": "eval", "step": 0, "pass_rate": 0.0, "reward_mean": 1.0}]
    for step in (1, 2, 3):
        rows.append({"kind": "train", "step": step, "seconds": 0.1, "reward": 0.5 * step, "kl": 0.01 * step,
                     "completions/mean_length": 10.0 + step,
                     **{f"rewards/{name}/mean": 0.1 * step + i for i, name in enumerate(rewards)},
                     **{f"rewards/{name}/std": 0.05 for name in rewards}})
    rows.append({"kind": "eval", "step": 3, "pass_rate": 0.5, "reward_mean": 1.5})
    return rows


def test_the_report_plots_each_refreshs_grpo_curves_and_marks_where_rounds_began(tmp_path: Path) -> None:
    """A study whose synpro arm refreshed once, written through the Store API as a sweep records it."""
    from synpro.report import study_figures

    url = f"sqlite:///{tmp_path / 'synpro.db'}"
    rewards = ("format", "influence", "length")
    with Store(url) as store:
        sid = store.upsert_study("refreshed", "experiment: {name: refreshed}\n",
                                 {"arm": "synpro", "metric": "final_val_loss", "direction": "minimize"})
        trial = store.upsert_trial(sid, "hash-r", {"training.lr": 0.01}, optuna_number=0)
        for name in ("repetition", "synpro"):
            arm = store.upsert_arm(trial, name, name, f"cfg-{name}", 2000, 6144)
            store.add_evaluations(arm, [{"tokens": t, "step": t // 256, "val_loss": 6.0 - t / 2048}
                                        for t in (0, 1024, 2048, 3072, 4096, 5120, 6144)])
            store.set_arm_result(arm, final_val_loss=3.0, tokens_seen=6144, effective_tokens=None,
                                 effective_tokens_extrapolated=None, multiplier_vs_repetition=None)
        store.add_round(arm, 1, 2048, {"rephrase": _grpo_steps(rewards), "reformat": _grpo_steps(rewards[:2])})
        store.finish_trial(trial, "finished", 3.0)
        figures = study_figures(store, "refreshed")
    fig = figures["grpo_synpro_round1_rephrase.png"]
    assert [line.get_label() for line in fig.axes[0].lines] == list(rewards)  # one line per reward
    assert len(fig.axes[0].collections) == len(rewards)  # each with its spread band
    assert list(fig.axes[0].lines[2].get_ydata()) == pytest.approx([2.1, 2.2, 2.3])
    for ax, want in zip(fig.axes[1:4], ([0.5, 1.0, 1.5], [0.01, 0.02, 0.03], [11.0, 12.0, 13.0])):  # total, KL, length
        assert list(ax.lines[0].get_ydata()) == pytest.approx(want)
    assert list(fig.axes[4].lines[0].get_xdata()) == [0, 3] and list(fig.axes[4].lines[0].get_ydata()) == [0.0, 0.5]
    assert len(figures["grpo_synpro_round1_reformat.png"].axes[0].lines) == 2
    loss = figures["loss_curves.png"].axes[0]
    marks = [line for line in loss.lines if list(line.get_xdata()) == [2048, 2048]]
    assert len(marks) == 1 and marks[0].get_color() == loss.lines[1].get_color()  # synpro's refresh, its colour

    out = tmp_path / "refreshed.html"
    reported = runner.invoke(app, ["report", "--store", url, "--study", "refreshed", "--out", str(out)])
    assert reported.exit_code == 0, reported.output
    page = out.read_text()
    for name in ("grpo_synpro_round1_rephrase.png", "grpo_synpro_round1_reformat.png", "loss_curves.png"):
        assert f'alt="{name}"' in page, name
    compared = runner.invoke(app, ["compare", "--store", url, "--out", str(tmp_path / "plots")])
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "plots" / "refreshed" / "grpo_synpro_round1_rephrase.png").read_bytes().startswith(PNG_MAGIC)
