"""Figures people would rather look at than read: learning curves and effective tokens per arm,
fitted laws over their points, what a repeated token is worth (with its interval), what a
search found, and how each refresh's generators trained (GRPO curves)."""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to PNG files and MLflow artifacts
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Curve = Sequence[tuple[float, float]]
Band = Sequence[tuple[float, float]]  # (low, high) at each x of a curve


_COLORS = [f"C{i}" for i in range(10)]
_LINESTYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LOG_RATIO = 3  # search values this far apart are scale parameters: a log axis spaces them as the search did
_TITLE_CHARS_PER_INCH = 11  # at the default title size: wrap beyond this many characters per inch of width


def _styles(names: Sequence[str], reference: str | None) -> dict[str, dict]:
    """A style per curve that no other shares (colour, line style and marker all cycle), so an arm drawn
    over another stays visible; the reference is the black dashed line."""
    styles, i = {}, 0
    for name in names:
        if name == reference:
            styles[name] = {"linestyle": "--", "color": "black", "linewidth": 1.5}
            continue
        styles[name] = {"color": _COLORS[i % len(_COLORS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
                        "marker": _MARKERS[i % len(_MARKERS)], "markersize": 4}  # filled: hollow means extrapolated
        i += 1
    return styles


def _title(fig: Figure, ax: Any, text: str) -> None:
    """The title wrapped to the figure's width, so it is never cut off."""
    width = int(fig.get_figwidth() * _TITLE_CHARS_PER_INCH)
    wrapped = "\n".join(textwrap.wrap(text, width)) or text
    (ax.set_title if ax is not None else fig.suptitle)(wrapped, fontsize="medium")


def _plain_log_ticks(axis: Any, suffix: str = "") -> None:
    """Readable ticks on a log axis: "0.9", "1.5", "2", not "2×10⁰"; minor ticks labelled too when the
    axis spans under a decade (else it would show one label or none)."""
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}{suffix}")
    low, high = axis.get_view_interval()
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if low > 0 and high / low < 10 else ticker.NullFormatter())


def _token_ticks(axis: Any) -> None:
    """A token-count log axis labelled 20k, 50k, 100k, 200k, ... rather than 2×10⁴ or one lone 10⁵."""
    def short(value: float, _: Any) -> str:
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= size:
                return f"{value / size:g}{unit}"
        return f"{value:g}"

    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(short))
    axis.set_minor_formatter(ticker.NullFormatter())


def loss_figure(curves: dict[str, Curve], reference: str | None = None, title: str = "",
                rounds: dict[str, Sequence[int]] | None = None) -> Figure:
    """Validation loss against tokens seen, one line per arm in a style of its own, the reference (oracle)
    dashed black; `rounds` marks where an arm's refresh rounds began (a dotted vertical line in its colour)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    styles = _styles(list(curves), reference)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            [line] = ax.plot(xs, ys, label=name, **styles[name])
            for start in (rounds or {}).get(name, ()):
                ax.axvline(start, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    _token_ticks(ax.xaxis)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    _title(fig, ax, title or "Learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def effective_figure(effective: dict[str, Sequence[tuple[float, float, bool]]], reference: str | None = None,
                     title: str = "") -> Figure:
    """Effective (oracle-equivalent unique) tokens against tokens seen; hollow markers are extrapolated."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    top = 0.0
    styles = _styles(list(effective), reference)
    for name, points in effective.items():
        finite = [(t, d, x) for t, d, x in points if d is not None and math.isfinite(d) and d > 0]
        if not finite:
            continue
        xs, ys, extrapolated = zip(*finite)
        line, = ax.plot(xs, ys, label=name, **styles[name])
        hollow = [(x, y) for x, y, e in finite if e]
        if hollow:
            ax.scatter(*zip(*hollow), facecolors="none", edgecolors=line.get_color(), s=40, zorder=3)
        top = max(top, max(xs))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _token_ticks(ax.xaxis)
    _token_ticks(ax.yaxis)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("effective tokens (oracle-equivalent)")
    _title(fig, ax, title or "Effective tokens (hollow = extrapolated)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
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
    _title(fig, ax, title or "Fitted laws (lines) over their points")
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
    for axis in (ax.xaxis, ax.yaxis):
        _plain_log_ticks(axis)
    ax.set_xlabel("epochs over the unique tokens (D/U)")
    ax.set_ylabel("D'/U (worth in unique tokens, per unique token)")
    _title(fig, ax, title or "What repeated tokens are worth (bands: intervals)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def multiplier_figure(arms: dict[str, tuple[float | None, Sequence[float] | None, Sequence[float]]],
                      title: str = "") -> Figure:
    """Each arm's multiplier vs repetition: a dot per seed, the mean over seeds beside them, with its 95%
    interval where there is one (several seeds); the legend says which the figure has."""
    fig, ax = plt.subplots(figsize=(max(5.6, 1.4 * len(arms) + 2), 4.2), dpi=110)
    labelled: set[str] = set()

    def label(text: str) -> str | None:
        return None if text in labelled or labelled.add(text) else text

    for i, (name, (mean, ci, per_seed)) in enumerate(arms.items()):
        seeds = [v for v in per_seed if v is not None and math.isfinite(v) and v > 0]
        if len(seeds) > 1:
            ax.scatter([i] * len(seeds), seeds, s=22, color="grey", zorder=3, label=label("a seed"))
        if mean is not None and math.isfinite(mean) and mean > 0:
            if ci is not None:
                low, high = ci
                ax.errorbar([i + 0.15 * (len(seeds) > 1)], [mean], yerr=[[mean - low], [high - mean]], fmt="o",
                            color="C0", capsize=5, label=label("mean over seeds [95% interval]"))
            else:
                ax.scatter([i], [mean], s=36, color="C0", zorder=4,
                           label=label("one seed (no interval)" if len(seeds) <= 1 else "mean over seeds"))
            ax.annotate(f"{mean:.3g}×", (i, mean), textcoords="offset points", xytext=(8, 0), va="center",
                        fontsize="small")
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":", label="repetition (1×)")
    ax.set_xticks(range(len(arms)), list(arms), rotation=20, ha="right")
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis, "×")
    ax.set_ylabel("× repetition (effective tokens)")
    _title(fig, ax, title or "Multiplier vs repetition per arm")
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def search_figure(trials: Sequence[tuple[dict[str, Any], float]], objective: str, title: str = "",
                  log_params: Sequence[str] = ()) -> Figure:
    """The objective against each searched parameter, one panel per parameter and a point per trial.

    Numeric parameters get a numeric axis (log when the search samples them on a log scale,
    `log_params`, or their values differ by a factor of LOG_RATIO or more, as a grid of learning
    rates does); anything else is categorical, one column per distinct value.
    """
    names = sorted({name for params, _ in trials for name in params})
    panels = max(1, len(names))
    fig, axes = plt.subplots(1, panels, figsize=(max(6.4, 3.6 * panels), 4.2), dpi=110, squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        pairs = [(params[name], value) for params, value in trials if name in params and math.isfinite(value)]
        xs, ys = zip(*pairs) if pairs else ((), ())
        if _numeric(xs):
            ax.scatter(xs, ys, s=24)
            if xs and min(xs) > 0 and (name in log_params or max(xs) >= LOG_RATIO * min(xs)):
                ax.set_xscale("log")
                ax.set_xticks(sorted(set(xs)))  # the values tried, written out
                ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
                ax.margins(x=0.15)
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys, s=24)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(objective)
    _title(fig, None, title or "Search results (a point per trial)")
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
    _title(fig, ax, title or "Pareto front (a point per trial)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def grpo_figure(rows: Sequence[dict[str, Any]], title: str = "", beta: float | None = None) -> Figure:
    """One GRPO run per step (a generator's metrics.jsonl rows): each reward's mean with its spread (±1
    std, where recorded), the weighted total, KL, completion length and the held-out filter pass rate.
    A panel with nothing to draw says why (β = 0: GRPO computes no KL)."""
    train = sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["step"])
    held_out = sorted((r for r in rows if r.get("kind") == "eval" and r.get("pass_rate") is not None),
                      key=lambda r: r["step"])
    rewards = sorted({k.split("/")[1] for r in train for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), dpi=110, sharex=True)  # one step axis for all
    ax = axes[0]
    for i, name in enumerate(rewards):
        points = [(r["step"], r[f"rewards/{name}/mean"], r.get(f"rewards/{name}/std"))
                  for r in train if r.get(f"rewards/{name}/mean") is not None]
        if not points:
            continue
        steps, means, stds = zip(*points)
        [line] = ax.plot(steps, means, marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                         linestyle=_LINESTYLES[i % len(_LINESTYLES)], label=name)
        if all(s is not None for s in stds):
            ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.2)
    ax.set_title("rewards (mean ± std)")
    ax.set_ylabel("reward")
    if rewards:
        ax.legend(fontsize=8)
    for ax, key, name, unit in ((axes[1], "reward", "total reward", "weighted sum of rewards"),
                                (axes[2], "kl", "KL to the initial generator", "KL (nats per token)"),
                                (axes[3], "completions/mean_length", "completion length", "tokens")):
        points = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=4)
        else:
            why = "β = 0: no KL penalty,\nso GRPO computes no KL" if key == "kl" and beta == 0 else "not recorded"
            ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_title(name)
        ax.set_ylabel(unit)
    if held_out:
        axes[4].plot([r["step"] for r in held_out], [r["pass_rate"] for r in held_out], marker="o", markersize=4)
    else:
        axes[4].text(0.5, 0.5, "no held-out evaluation", transform=axes[4].transAxes, ha="center", va="center",
                     color="grey")
    axes[4].set_ylim(-0.05, 1.05)
    axes[4].set_title("held-out filter pass rate")
    axes[4].set_ylabel("share of windows passing")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # steps are whole
        ax.grid(alpha=0.3)
    _title(fig, None, title or "GRPO")
    fig.tight_layout()
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding in a self-contained page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def close(fig: Figure) -> None:
    plt.close(fig)
