"""Figures a reviewer would accept: legends that match what is drawn, every arm visible, readable
ticks, log axes for scale parameters, titles that fit, and empty panels that say why."""

from __future__ import annotations

import pytest

from synpro import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _legend(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]


def test_multiplier_legend_promises_an_interval_only_where_one_is_drawn() -> None:
    one_seed = plots.multiplier_figure({"repetition": (1.0, None, [1.0]), "synpro": (0.995, None, [0.995])})
    assert not any("95%" in label for label in _legend(one_seed))
    assert "one seed (no interval)" in _legend(one_seed)
    seeds = plots.multiplier_figure({"synpro": (2.3, (2.0, 2.7), [2.1, 2.3, 2.5])})
    assert "mean over seeds [95% interval]" in _legend(seeds) and "a seed" in _legend(seeds)
    seeds.canvas.draw()
    ticks = [t.get_text() for t in seeds.axes[0].get_yticklabels(minor=True) + seeds.axes[0].get_yticklabels()]
    assert ticks and all("10^" not in t and "times" not in t for t in ticks) and "2×" in ticks  # plain numbers


def test_every_arm_gets_a_style_of_its_own_and_the_reference_is_black_dashed() -> None:
    curve = [(1000, 5.0), (2000, 4.5)]
    fig = plots.loss_figure({"oracle": curve, "repetition": curve, "synpro": curve, "prompted": curve}, "oracle")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert (lines["oracle"].get_color(), lines["oracle"].get_linestyle()) == ("black", "--")
    styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for name, line in lines.items()
              if name != "oracle"]
    assert len(set(styles)) == 3 and len({s[1] for s in styles}) == 3  # identical curves still tell apart


def test_long_titles_wrap_inside_the_figure() -> None:
    title = "× repetition per arm, trial #12 (lr=0.003 · warmup_tokens=16000), Pareto-optimal, best primary objective"
    fig = plots.multiplier_figure({"synpro": (1.0, None, [1.0])}, title)
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert "\n" in fig.axes[0].get_title() and box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_a_log_scaled_search_parameter_gets_a_log_axis() -> None:
    trials = [({"training.lr": 0.003}, 1.0), ({"training.lr": 0.01}, 0.9)]
    assert plots.search_figure(trials, "objective").axes[0].get_xscale() == "log"  # a grid 3.3x apart
    close = [({"training.lr": 0.004}, 1.0), ({"training.lr": 0.005}, 0.9)]
    assert plots.search_figure(close, "objective").axes[0].get_xscale() == "linear"
    assert plots.search_figure(close, "objective", log_params=["training.lr"]).axes[0].get_xscale() == "log"


def test_grpo_panels_count_whole_steps_and_say_why_kl_is_empty() -> None:
    rows = [{"kind": "eval", "step": 0, "pass_rate": 0.0}] + [
        {"kind": "train", "step": step, "reward": 0.5 * step, "completions/mean_length": 10.0 + step,
         "rewards/length/mean": 0.1 * step} for step in (1, 2)]
    fig = plots.grpo_figure(rows, "GRPO", beta=0.0)
    fig.canvas.draw()
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1])
        assert ax.get_ylabel() and ax.get_xlabel() == "GRPO step"
    kl = fig.axes[2]
    assert not kl.lines and any("β = 0" in t.get_text() for t in kl.texts)
    assert not any("β = 0" in t.get_text() for t in plots.grpo_figure(rows, "GRPO", beta=0.01).axes[2].texts)
