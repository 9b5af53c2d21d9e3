"""One self-contained HTML page per study: spec, results, comparison, fits and figures.

Figures are embedded as base64 PNG and the styles are inline, so the page can be mailed,
archived or opened offline without anything else. Figures are shared with `synpro compare`,
which writes the same ones as PNG files.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from synpro.display import constant_interval, estimate, fmt, identification, interval, seed_estimate
from store import Store
from store.store import best_trial
from synpro import plots
from synpro.stages import read_manifest
from synpro.tracking import params_label
from synpro.fits import is_reference, predict, study_points, token_worth, worth_interval

_FIT_POINTS_PER_LINE = 60
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # where `synpro ui` serves by default
_WORTH_EPOCHS = np.geomspace(1.0, 1e3, 80)  # the D'/U plot's x axis, cut at the most epochs any recipe ran
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5rem 0; }
.note { color: #555; font-size: 0.9rem; }
td.text { white-space: pre-wrap; max-width: 32rem; }
summary { cursor: pointer; color: #555; }
"""
_READING = (
    "Effective tokens D_eff of a run are the unique (oracle) tokens that reach the same validation loss: the "
    "oracle's curve is inverted by monotone interpolation in log D, and by a fitted power law beyond its last "
    "point (then flagged as extrapolated). The multiplier is D_eff(arm) / D_eff(repetition) at equal tokens "
    "seen. R_D* is Muennighoff et al.'s decay constant fitted per arm with the base law frozen: D' = U + U R_D* "
    "(1 - exp(-R/R_D*)), R = epochs - 1; D'/U is what the arm's tokens are worth in unique tokens at its "
    "epochs, D'/D what one seen token is worth, and 1 + R_D* the ceiling of D'/U under endless repetition.")


def latest_fits(store: Store, study: str) -> dict[str | None, dict]:
    """The newest stored fit of each arm."""
    return {fit["arm"]: fit for fit in store.fits(study)}


def _reference(trial: dict) -> str | None:
    return next((name for name, arm in trial["arms"].items() if is_reference(arm["kind"])), None)


def _fit_series(store: Store, study: str, fits: dict[str | None, dict]) -> dict[str, tuple[list, list]]:
    """Per fitted arm and (model size, unique tokens): its points and the fitted law through them."""
    points = study_points(store, study) if fits else {}
    series: dict[str, tuple[list, list]] = {}
    for arm, fit in fits.items():
        if arm not in points:
            continue
        p = points[arm]
        groups = sorted(set(zip(p.N.tolist(), p.U.tolist())))
        for n, u in groups:
            mask = (p.N == n) & (p.U == u)
            grid = np.geomspace(p.D[mask].min(), p.D[mask].max(), _FIT_POINTS_PER_LINE)
            line = predict(fit["law"], fit["constants"], {"N": np.full_like(grid, n), "D": grid,
                                                          "U": np.full_like(grid, u)})
            label = arm if len(groups) == 1 else f"{arm} (N={n:.3g}, U={u:.3g})"
            series[label] = (list(zip(p.D[mask].tolist(), p.L[mask].tolist())), list(zip(grid.tolist(), line.tolist())))
    return series


def _worth_series(store: Store, study: str,
                  fits: dict[str | None, dict]) -> dict[str, tuple[list, list | None]]:
    """Per recipe with a fitted R_D*: D'/U over epochs (1 to the most any recipe ran) and its
    band from the R_D* interval (D'/U grows with R_D*, so the interval's ends bound it)."""
    fitted = {arm: fit for arm, fit in fits.items() if fit["constants"].get("R_D_star") is not None}
    if not fitted:
        return {}
    points = study_points(store, study)
    most = max((points[arm].epochs for arm in fitted if arm in points), default=_WORTH_EPOCHS[-1])
    epochs = _WORTH_EPOCHS[_WORTH_EPOCHS <= most].tolist() + [most]
    series = {}
    for arm, fit in fitted.items():
        def worth(r_d_star: float) -> list[float]:
            return [token_worth(e, r_d_star)["unique_value"] for e in epochs]

        ci = (fit["ci"] or {}).get("R_D_star")
        entry = _identified(fit, "R_D_star")
        label = f"{arm or '(pooled)'}: R_D* {estimate(fit['constants']['R_D_star'], ci)}"
        if entry is None or not entry["identified"]:
            label += " (not assessed)" if entry is None else " (not identified)"
        band = None if ci is None else list(zip(worth(ci[0]), worth(ci[1])))
        series[label] = (list(zip(epochs, worth(fit["constants"]["R_D_star"]))), band)
    return series


def objective_name(objective: dict[str, Any]) -> str:
    return f"{objective.get('metric', 'objective')} of {objective.get('arm', '?')}"


def _pareto_figure(results: list[dict], objectives: list[dict]) -> Figure | None:
    """The finished trials in the plane of the first two objectives, the Pareto-optimal marked
    (computed over every objective: with more than two, a front point may look dominated here)."""
    first, second = objectives[:2]
    trials = [(f"#{t['trial']}", t["objective_values"][0], t["objective_values"][1], t["pareto_optimal"])
              for t in results if t.get("objective_values") and None not in t["objective_values"][:2]
              and t["state"] == "finished"]
    if not trials:
        return None
    more = f" (front over all {len(objectives)} objectives)" if len(objectives) > 2 else ""
    return plots.pareto_figure(trials, (objective_name(first), objective_name(second)),
                               (first["direction"], second["direction"]), f"Pareto front{more}")


def study_figures(store: Store, study: str) -> dict[str, Figure]:
    """File name -> figure: the best trial's curves (refreshes marked) and each refresh's GRPO curves,
    the search results and the fitted laws."""
    info = store.study(study)
    objective = info["objective"]
    spec = yaml.safe_load(info["spec_yaml"] or "") or {}
    results = store.results(study)
    figures: dict[str, Figure] = {}
    best = best_trial(results, objective)
    if best is not None:
        points = [p for p in store.curves(study) if p["params_hash"] == best["params_hash"]]
        reference = _reference(best)
        pick = ", Pareto-optimal, best primary objective" if "objectives" in objective else ", best objective"
        title = f"trial #{best['trial']}" + (f" ({params_label(best['params'])})" if best["params"] else "") + (
            pick if best["objective_value"] is not None and len(results) > 1 else "")
        beta = best["params"].get("grpo.beta", (spec.get("grpo") or {}).get("beta"))
        curves: dict[str, list] = {}
        effective: dict[str, list] = {}
        several = len({p["seed"] for p in points}) > 1
        for p in points:
            name = f"{p['arm']} (seed {p['seed']})" if several else p["arm"]
            if p["val_loss"] is not None:
                curves.setdefault(name, []).append((p["tokens"], p["val_loss"]))
            if p["effective_tokens"] is not None:
                effective.setdefault(name, []).append(
                    (p["tokens"], p["effective_tokens"], bool(p["effective_tokens_extrapolated"])))
        if several and reference:
            reference = f"{reference} (seed {min(p['seed'] for p in points)})"
        refreshes = [r for r in store.rounds(study) if r["params_hash"] == best["params_hash"]]
        starts: dict[str, list[int]] = {}
        for r in refreshes:
            starts.setdefault(f"{r['arm']} (seed {r['seed']})" if several else r["arm"], []).append(r["start_tokens"])
        if curves:
            figures["loss_curves.png"] = plots.loss_figure(
                curves, reference, f"Learning curves, {title}" + (" (dotted: refreshes)" if starts else ""), starts)
        for r in refreshes:
            who = f"{r['arm']}-seed{r['seed']}" if several else r["arm"]
            for op, rows in r["grpo"].items():
                figures[f"grpo_{who}_round{r['round']}_{op}.png"] = plots.grpo_figure(
                    rows, f"GRPO of {op}, {who}, round {r['round']} (from {r['start_tokens']:,} tokens), {title}",
                    beta=beta)
        if effective:
            figures["effective_tokens.png"] = plots.effective_figure(
                effective, reference, f"Effective tokens, {title} (hollow = extrapolated)")
        spread = {arm: (r["multiplier_vs_repetition"], r.get("multiplier_ci"),
                        [v["multiplier_vs_repetition"] for v in r.get("per_seed", {}).values()])
                  for arm, r in best["arms"].items() if r["multiplier_vs_repetition"] is not None}
        if spread:
            figures["multiplier.png"] = plots.multiplier_figure(spread, f"× repetition per arm, {title}")
    searched = [(t["params"], t["objective_value"]) for t in results
                if t["params"] and t["objective_value"] is not None]
    if searched:
        name = objective_name(objective)
        logs = [key for key, param in ((spec.get("search") or {}).get("params") or {}).items()
                if isinstance(param, dict) and param.get("log")]
        figures["search.png"] = plots.search_figure(searched, name, f"Search results: {objective.get('direction', '')} "
                                                                    f"{name}", log_params=logs)
    pareto = _pareto_figure(results, objective["objectives"]) if "objectives" in objective else None
    if pareto is not None:
        figures["pareto.png"] = pareto
    fits = latest_fits(store, study)
    series = _fit_series(store, study, fits)
    if series:
        figures["fits.png"] = plots.law_figure(series, "Fitted laws (lines) over each arm's points")
    worth = _worth_series(store, study, fits)
    if worth:
        figures["token_worth.png"] = plots.worth_figure(
            worth, "D'/U against epochs per recipe (bands: 95% intervals)")
    return figures


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 1) -> str:
    """An HTML table; the first `text_columns` columns are left-aligned text."""
    def cell(tag: str, i: int, value: Any) -> str:
        shown = value if isinstance(value, str) else fmt(value)
        css = ' class="text"' if i < text_columns else ""
        return f"<{tag}{css}>{shown if isinstance(value, Markup) else html.escape(shown)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """A table cell that is HTML already (a link), not text to escape."""


def _run_link(run_id: str | None, mlflow_ui: str) -> str:
    """A link to an MLflow run as `synpro ui` serves it, or '-'."""
    if not run_id:
        return "-"
    return Markup(f'<a href="{html.escape(mlflow_ui)}/#/runs/{html.escape(run_id)}">{html.escape(run_id[:8])}</a>')


def _params(trial: dict) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in trial["params"].items()) or "-"


def _results_rows(results: list[dict], mlflow_ui: str) -> list[list[Any]]:
    rows = []
    for trial in results:
        params = _params(trial)
        for arm, r in trial["arms"].items():
            seeds = ", ".join(f"{s}: {fmt(v['multiplier_vs_repetition'])}" for s, v in r.get("per_seed", {}).items())
            rows.append([str(trial["trial"]), params, arm, r["state"], r["final_val_loss"], r["tokens_seen"],
                         r["unique_tokens"], r["effective_tokens"], r["effective_tokens_extrapolated"],
                         seed_estimate(r["multiplier_vs_repetition"], r.get("multiplier_ci"), r.get("n_seeds")),
                         seeds or "-", r.get("multiplier_method") or "-", _run_link(r.get("mlflow_run_id"), mlflow_ui)])
    return rows


def _accuracy_rows(results: list[dict]) -> list[list[Any]]:
    """Per trial and arm: the downstream accuracy at the end, and what it is worth in oracle tokens."""
    return [[str(trial["trial"]), _params(trial), arm, r.get("final_accuracy"), r.get("effective_tokens_accuracy"),
             r.get("effective_tokens_accuracy_extrapolated"), r.get("multiplier_accuracy")]
            for trial in results for arm, r in trial["arms"].items() if r.get("final_accuracy") is not None]


SAMPLES_PER_SET = 3
_SAMPLE_CHARS = 700


def _set_users(results: list[dict]) -> dict[str, list[str]]:
    """Set folder -> "arm (trial #n): tokens seen" for every arm that trained on it."""
    users: dict[str, list[str]] = {}
    for trial in results:
        for arm, r in trial["arms"].items():
            for seed, values in r.get("per_seed", {}).items():
                for row in (values.get("synthetic_sets") or {}).values():
                    if row.get("set"):
                        users.setdefault(row["set"], []).append(
                            f"{arm} (trial #{trial['trial']}, seed {seed}): {fmt(row.get('tokens_seen'))} tokens seen")
    return users


def _clip(text: str) -> str:
    return text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + " …"


def _set_samples(records: Path) -> list[list[Any]]:
    """Three source -> output pairs: passed outputs first, then rejected ones with their raw output and why."""
    passed, failed = [], []
    with open(records, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r["passed"]:
                passed.append([r["window"], _clip(r["source"]), _clip(r["text"]), "passed"])
            elif len(failed) < SAMPLES_PER_SET:
                raw = "\n".join(r["raw"]) if isinstance(r.get("raw"), list) else str(r.get("raw", ""))
                failed.append([r["window"], _clip(r["source"]), _clip(raw), "rejected: " + ", ".join(r["failures"])])
            if len(passed) >= SAMPLES_PER_SET:
                break
    return (passed + failed)[:SAMPLES_PER_SET]


def _synthetic_sections(workdir: Path | None, results: list[dict]) -> str:
    """Per synthetic set in the workdir: its size, pass rate, failures by reason, who trained on it, samples."""
    folders = sorted((workdir / "stages").glob("synthesize-*/stats.json")) if workdir else []
    if not folders:
        return ('<p class="note">No synthetic sets found (they are read from the workdir\'s stages/: pass '
                "<code>--workdir</code>).</p>")
    users = _set_users(results)
    parts = []
    for stats_file in folders:
        folder = stats_file.parent
        stats = json.loads(stats_file.read_text())["stats"]
        generator = ((read_manifest(folder) or {}).get("config") or {}).get("generator", "-")
        failures = ", ".join(f"{reason} {n}" for reason, n in sorted(stats["failures"].items(), key=lambda x: -x[1])
                             if n) or "none"
        parts.append(
            f"<h3>{html.escape(stats['operation'])} set <code>{html.escape(folder.name)}</code></h3>"
            + _table(["generator", "rejected by reason", "windows", "passed", "pass rate", "generated tokens",
                      "usable tokens (the set)", "complete"],
                     [[str(generator), failures, stats["windows"], stats["passed"], stats["pass_rate"],
                       stats["generated_tokens"], stats["output_tokens"], stats["complete"]]], 2)
            + '<p class="note">Trained on by: ' + html.escape("; ".join(users.get(folder.name, [])) or
                                                             "no finished arm records it") + "</p>"
            + _table(["window", "source", "output", "verdict"], _set_samples(folder / "records.jsonl"), 4))
    return "".join(parts)


def _objective_text(objective: dict[str, Any], results: list[dict]) -> str:
    """The study's objective; with several, each and the trials on the Pareto front."""
    if "objectives" not in objective:
        return f"Objective: {objective.get('direction', '')} {objective_name(objective)}."
    front = [f"#{t['trial']}" for t in results if t.get("pareto_optimal")]
    return ("Objectives: " + "; ".join(f"{o['direction']} {objective_name(o)}" for o in objective["objectives"])
            + f". Pareto front: {', '.join(front) or 'no finished trial yet'}.")


def _reference_text(reference: dict | None) -> str:
    if not reference:
        return "not recorded"
    if reference["kind"] == "fixed":
        return f"a fixed oracle ({reference['arm']}) trained at {reference['params']}"
    if reference["kind"] == "best":
        if reference.get("provisional"):
            return "the trial's own oracle (the study's best oracle is picked when the sweep ends)"
        return f"the study's best oracle: trial #{reference['trial']} ({reference['params']})"
    return "the trial's own oracle, per seed"


def _references(results: list[dict]) -> str:
    """Which reference each trial used, trials that share one named together."""
    trials: dict[str, list[str]] = {}
    for trial in results:
        trials.setdefault(_reference_text(trial.get("reference")), []).append(f"#{trial['trial']}")
    return "; ".join(f"{text} (trials {', '.join(numbers)})" for text, numbers in trials.items()) or "-"


def _noise_floor_rows(results: list[dict]) -> list[list[Any]]:
    """Per trial and seed: repetition's first-pass D_eff / tokens, and the reference's tail fit."""
    rows = []
    for trial in results:
        floor = trial.get("noise_floor") or {}
        calibration, tails = floor.get("first_pass_calibration", {}), floor.get("oracle_tail", {})
        for seed in sorted(set(calibration) | set(tails), key=int):
            c, t = calibration.get(seed, {}), tails.get(seed, {})
            rows.append([str(trial["trial"]), seed, c.get("ratio"), c.get("n_points"), t.get("E"), t.get("B"),
                         t.get("beta"), t.get("from_tokens"), t.get("n_points"), t.get("r2"), t.get("rmse_log_loss")])
    return rows


def _identified(fit: dict, name: str) -> dict | None:
    """A stored fit's identification of one constant (None: the fit predates identification)."""
    return None if fit["identified"] is None else fit["identified"].get(name)


def _constant_rows(arm: str, fit: dict) -> list[list[Any]]:
    """One row per constant of a stored fit: estimate, interval and identification together."""
    rows = []
    frozen = fit["settings"].get("frozen", {})
    for name, value in fit["constants"].items():
        if name in frozen:
            rows.append([arm, fit["law"], name, value, "-", "-", "frozen"])
            continue
        rows.append([arm, fit["law"], name, value, constant_interval(name, fit["ci"], fit["interval"]),
                     identification(_identified(fit, name)), "fitted"])
    return rows


def _how_sure(fit: dict) -> str:
    """Where a fit's intervals came from, or that it has none."""
    if fit["interval"]:
        return f"{fit['interval']['method']} of {fit['interval']['n']} refits"
    return interval(None)


def _fit_sections(store: Store, study: str, fits: dict[str | None, dict]) -> str:
    if not fits:
        return f'<p class="note">No fits yet: run <code>synpro fit --study {html.escape(study)}</code>.</p>'
    points = study_points(store, study)
    rows, constant_rows = [], []
    frozen: dict[tuple[str, str, str], list[str]] = {}  # (constant, value, why) -> arms
    for arm, fit in fits.items():
        name = arm or "(pooled)"
        epochs = points[arm].epochs if arm in points else None
        r_d_star = fit["constants"].get("R_D_star")
        worth = token_worth(epochs, r_d_star)
        ci = None if fit["ci"] is None else fit["ci"].get("R_D_star")
        worth_ci = worth_interval(epochs, ci)
        flag = "-" if r_d_star is None else identification(_identified(fit, "R_D_star"))
        rows.append([name, fit["law"], fit["n_points"], estimate(r_d_star, ci), flag, epochs,
                     "-" if r_d_star is None else estimate(worth["unique_value"], worth_ci), worth["token_value"],
                     worth["ceiling"], fit["residual_spread"], fit["points_per_free_constant"], _how_sure(fit),
                     fit["id"]])
        constant_rows += _constant_rows(name, fit)
        why = fit["settings"].get("frozen_why", {})
        for constant, value in fit["settings"].get("frozen", {}).items():
            frozen.setdefault((constant, fmt(value), why.get(constant, "given")), []).append(name)
    frozen_rows = [[name, value, why, ", ".join(arms)] for (name, value, why), arms in frozen.items()]
    return ("<h3>Value of a token, per arm</h3>"
            + _table(["arm", "law", "points", "R_D* [95% interval]", "R_D* identified", "epochs", "D'/U [95%]",
                      "D'/D", "ceiling 1+R_D*", "residual spread (RMS log)", "points per free constant",
                      "intervals", "fit id"], rows, 2)
            + '<p class="note">R_D* intervals hold the base constants fixed. A constant is not identified when '
              "its estimate or interval reaches a bound of the search, or when holding it half a decade away "
              "(others refitted) barely changes the fit; its value then says little.</p>"
            + "<h3>Constants</h3>"
            + _table(["arm", "law", "constant", "estimate", "95% interval", "identified", "how"], constant_rows, 3)
            + "<h3>Frozen constants (not fitted)</h3>"
            + (_table(["constant", "value", "why", "in the fits of"], frozen_rows, 4) if frozen_rows
               else '<p class="note">None: every constant was fitted.</p>'))


def render_report(store: Store, study: str, workdir: Path | None = None,
                  mlflow_ui: str = DEFAULT_MLFLOW_UI) -> str:
    """The study's page as one HTML string; `workdir` (where the sweep ran) adds its synthetic sets'
    diagnostics, and run links point at `mlflow_ui` (where `synpro ui` serves by default)."""
    info = store.study(study)
    results = store.results(study)
    comparison = store.compare(study)
    fits = latest_fits(store, study)
    figures = study_figures(store, study)
    images = []
    for name, fig in figures.items():
        data = base64.b64encode(plots.png(fig)).decode("ascii")
        plots.close(fig)
        images.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
    compare_rows = [[c["arm"], c["kind"], c["n_trials"], c["n_finished"], c["mean_final_loss"], c["best_final_loss"],
                     c["mean_effective_tokens"], c["mean_multiplier"], c["mean_epochs"],
                     estimate(c["r_d_star"], c["r_d_star_ci"]),
                     "-" if c["r_d_star"] is None else identification(c["r_d_star_identified"])]
                    for c in comparison]
    objective = info["objective"]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = html.escape(f"SynPro study {study}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{title}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f'<p class="note">Generated {generated}. {html.escape(_objective_text(objective, results))}</p>',
        f'<p class="note">{html.escape(_READING)}</p>',
        "<h2>Comparison of arms</h2>",
        _table(["arm", "kind", "trials", "finished", "mean final loss", "best final loss", "mean D_eff",
                "mean × repetition", "epochs", "latest R_D* [95% interval]", "R_D* identified"], compare_rows, 2),
        "<h2>Fits</h2>", _fit_sections(store, study, fits),
        "<h2>Figures</h2>", "\n".join(images) or '<p class="note">Nothing to plot yet.</p>',
        "<h2>Results per trial</h2>",
        '<p class="note">Means over seeds; D_eff at the last checkpoint. × repetition divides the mean D_eff '
        "over the last checkpoints by repetition's at the same seed (the method column), averaged over seeds "
        "(geometric mean) with a 95% interval paired by seed (t on log ratios; none with one seed).</p>",
        '<p class="note">Reference: ' + html.escape(_references(results)) + "</p>",
        _table(["trial", "params", "arm", "state", "val loss", "tokens seen", "unique", "D_eff", "extrap.",
                "× repetition [95%]", "per seed", "method", "MLflow run"], _results_rows(results, mlflow_ui), 4),
        f'<p class="note">Run links open in the MLflow UI at {html.escape(mlflow_ui)}: start it with '
        "<code>synpro ui --workdir WORKDIR</code>.</p>",
        "<h2>Downstream accuracy</h2>",
        '<p class="note">Accuracy at the last checkpoint (mean over seeds), the oracle tokens that reach it '
        "(D_eff by accuracy) and its ratio to repetition's. Near chance (1 / choices) these say nothing.</p>",
        _table(["trial", "params", "arm", "accuracy", "D_eff (acc)", "extrap.", "× rep. (acc)"],
               _accuracy_rows(results), 3) if _accuracy_rows(results)
        else '<p class="note">No downstream evaluation in this study.</p>',
        "<h2>Synthetic data</h2>",
        '<p class="note">Each set the sweep made: how many windows its generator rewrote, how many passed the '
        "filters (the rest never reach training) and why the others were rejected, its usable tokens, which "
        f"arms trained on it, and {SAMPLES_PER_SET} source → output samples.</p>",
        _synthetic_sections(workdir, results),
        "<h2>Noise floor</h2>",
        '<p class="note">Calibration: repetition\'s D_eff / tokens seen during its first pass, when its data is '
        "as unique as the oracle's (ideally 1). Tail: the reference oracle's power law E + B/D^beta fitted past "
        "the warmup, with its fit quality.</p>",
        _table(["trial", "seed", "first-pass D_eff/D", "points", "tail E", "tail B", "tail beta", "fitted past",
                "tail points", "tail R²", "tail RMS log"], _noise_floor_rows(results), 2),
        "<h2>Spec</h2>", f"<details><summary>The resolved spec (YAML)</summary><pre>{html.escape(info['spec_yaml'])}"
                         "</pre></details>",
        "</body></html>"])
