"""Figures people would rather look at than read: learning curves and effective tokens per arm,
fitted laws over their points, what a repeated token is worth (with its interval), what a
search found, and how each refresh's generators trained (GRPO curves)."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to PNG files and MLflow artifacts
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Curve = Sequence[tuple[float, float]]
Band = Sequence[tuple[float, float]]  # (low, high) at each x of a curve


def _styled(reference: str | None, name: str) -> dict:
    return {"linestyle": "--", "color": "black", "linewidth": 1.5} if name == reference else {"marker": "o", "markersize": 3}


def loss_figure(curves: dict[str, Curve], reference: str | None = None, title: str = "",
                rounds: dict[str, Sequence[int]] | None = None) -> Figure:
    """Validation loss against tokens seen, one line per arm, the reference (oracle) dashed; `rounds`
    marks where an arm's refresh rounds began (a dotted vertical line in the arm's colour)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            [line] = ax.plot(xs, ys, label=name, **_styled(reference, name))
            for start in (rounds or {}).get(name, ()):
                ax.axvline(start, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    ax.set_title(title or "Learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def effective_figure(effective: dict[str, Sequence[tuple[float, float, bool]]], reference: str | None = None,
                     title: str = "") -> Figure:
    """Effective (oracle-equivalent unique) tokens against tokens seen; hollow markers are extrapolated."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    top = 0.0
    for name, points in effective.items():
        finite = [(t, d, x) for t, d, x in points if d is not None and math.isfinite(d) and d > 0]
        if not finite:
            continue
        xs, ys, extrapolated = zip(*finite)
        line, = ax.plot(xs, ys, label=name, **_styled(reference, name))
        hollow = [(x, y) for x, y, e in finite if e]
        if hollow:
            ax.scatter(*zip(*hollow), facecolors="none", edgecolors=line.get_color(), s=40, zorder=3)
        top = max(top, max(xs))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("effective tokens (oracle-equivalent)")
    ax.set_title(title or "Effective tokens (hollow = extrapolated)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def law_figure(series: dict[str, tuple[Curve, Curve]], title: str = "") -> Figure:
    """Observed points (markers) and the fitted law (a line in the same colour), per series."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, (observed, fitted) in series.items():
        color = None
        if fitted:
            line, = ax.plot(*zip(*fitted), label=name)
            color = line.get_color()
        if observed:
            ax.scatter(*zip(*observed), s=14, color=color, label=None if fitted else name, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    ax.set_title(title or "Fitted laws (lines) over their points")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def worth_figure(series: dict[str, tuple[Curve, Band | None]], title: str = "") -> Figure:
    """D'/U against epochs per recipe, each with its interval band ((low, high) at every epoch of
    its curve) when it has one; fresh data (D'/U = epochs) is the dashed line no recipe beats."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    top = 1.0
    for name, (curve, band) in series.items():
        xs, ys = zip(*curve)
        line, = ax.plot(xs, ys, label=name)
        if band is not None:
            lows, highs = zip(*band)
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        top = max(top, max(xs))
    ax.plot([1.0, top], [1.0, top], linestyle="--", color="gray", linewidth=1, label="fresh data (D'/U = epochs)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):  # "2", not "2 x 10^0"; minor labels only when there are few decades
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if top < 10 else ticker.NullFormatter())
    ax.set_xlabel("epochs over the unique tokens (D/U)")
    ax.set_ylabel("D'/U (worth in unique tokens, per unique token)")
    ax.set_title(title or "What repeated tokens are worth (bands: intervals)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def multiplier_figure(arms: dict[str, tuple[float | None, Sequence[float] | None, Sequence[float]]],
                      title: str = "") -> Figure:
    """Each arm's multiplier vs repetition: a dot per seed, the mean over seeds as a bar with its
    95% interval, so the spread between seeds is seen beside the number reported."""
    fig, ax = plt.subplots(figsize=(max(4.8, 1.4 * len(arms) + 2), 4.2), dpi=110)
    for i, (name, (mean, ci, per_seed)) in enumerate(arms.items()):
        seeds = [v for v in per_seed if v is not None and math.isfinite(v) and v > 0]
        ax.scatter([i] * len(seeds), seeds, s=22, color="grey", zorder=3, label="a seed" if i == 0 else None)
        if mean is not None and math.isfinite(mean) and mean > 0:
            low, high = ci if ci is not None else (mean, mean)
            ax.errorbar([i + 0.15], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color="C0", capsize=5,
                        label="mean [95% interval]" if i == 0 else None)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(arms)), list(arms), rotation=20, ha="right")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.set_ylabel("× repetition (effective tokens)")
    ax.set_title(title or "Multiplier vs repetition per arm (dots: seeds)")
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend()
    fig.tight_layout()
    return fig


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def search_figure(trials: Sequence[tuple[dict[str, Any], float]], objective: str, title: str = "") -> Figure:
    """The objective against each searched parameter, one panel per parameter and a point per trial.

    Numeric parameters get a numeric axis (log when they span more than a decade); anything
    else is categorical, one column per distinct value.
    """
    names = sorted({name for params, _ in trials for name in params})
    panels = max(1, len(names))
    fig, axes = plt.subplots(1, panels, figsize=(max(6.4, 3.6 * panels), 4.2), dpi=110, squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        pairs = [(params[name], value) for params, value in trials if name in params and math.isfinite(value)]
        xs, ys = zip(*pairs) if pairs else ((), ())
        if _numeric(xs):
            ax.scatter(xs, ys, s=24)
            if xs and min(xs) > 0 and max(xs) > 10 * min(xs):
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys, s=24)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(objective)
    fig.suptitle(title or "Search results (a point per trial)")
    fig.tight_layout()
    return fig


def pareto_figure(trials: Sequence[tuple[str, float, float, bool]], axes: tuple[str, str],
                  directions: tuple[str, str], title: str = "") -> Figure:
    """Trials in the plane of two objectives, a point each (labelled with its trial); the Pareto-optimal
    ones filled and joined in order along the first objective, the rest hollow."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    front = sorted((x, y) for _, x, y, on in trials if on)
    rest = [(x, y) for _, x, y, on in trials if not on]
    if rest:
        ax.scatter(*zip(*rest), s=36, facecolors="none", edgecolors="grey", label="dominated")
    if front:
        ax.plot(*zip(*front), marker="o", markersize=7, color="C3", label="Pareto front")
    for label, x, y, _ in trials:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"{axes[0]} ({directions[0]})")
    ax.set_ylabel(f"{axes[1]} ({directions[1]})")
    ax.set_title(title or "Pareto front (a point per trial)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def grpo_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """One GRPO run per step (a generator's metrics.jsonl rows): each reward's mean with its spread (±1
    std, where recorded), the weighted total, KL, completion length and the held-out filter pass rate."""
    train = sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["step"])
    held_out = sorted((r for r in rows if r.get("kind") == "eval" and r.get("pass_rate") is not None),
                      key=lambda r: r["step"])
    rewards = sorted({k.split("/")[1] for r in train for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6), dpi=110)
    ax = axes[0]
    for name in rewards:
        points = [(r["step"], r[f"rewards/{name}/mean"], r.get(f"rewards/{name}/std"))
                  for r in train if r.get(f"rewards/{name}/mean") is not None]
        if not points:
            continue
        steps, means, stds = zip(*points)
        [line] = ax.plot(steps, means, marker="o", markersize=3, label=name)
        if all(s is not None for s in stds):
            ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.2)
    ax.set_title("rewards (mean ± std)")
    if rewards:
        ax.legend(fontsize=8)
    for ax, key, name in ((axes[1], "reward", "total reward"), (axes[2], "kl", "KL"),
                          (axes[3], "completions/mean_length", "completion length")):
        points = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3)
        ax.set_title(name)
    if held_out:
        axes[4].plot([r["step"] for r in held_out], [r["pass_rate"] for r in held_out], marker="o", markersize=3)
    axes[4].set_ylim(-0.05, 1.05)
    axes[4].set_title("held-out pass rate")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "GRPO")
    fig.tight_layout()
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding in a self-contained page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def close(fig: Figure) -> None:
    plt.close(fig)
