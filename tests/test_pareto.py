"""The Pareto front on points whose front is known by hand."""

from synpro import plots
from synpro.pareto import dominates, non_dominated


def test_the_front_keeps_the_points_nothing_beats_on_every_objective():
    # (multiplier: maximize, similarity: maximize)
    points = [(1.2, 0.50), (1.5, 0.40), (1.1, 0.45), (1.0, 0.70), (1.5, 0.40), (0.9, 0.30)]
    # (1.1, .45) loses to (1.2, .50) on both; (0.9, .30) to everything; the two (1.5, .40) tie and both stay.
    assert non_dominated(points, ["maximize", "maximize"]) == [True, True, False, True, True, False]
    # Minimizing the second objective instead turns the plane around.
    assert non_dominated(points, ["maximize", "minimize"]) == [False, True, False, False, True, True]
    assert dominates((1.2, 0.5), (1.1, 0.45), ["maximize", "maximize"])
    assert not dominates((1.5, 0.4), (1.5, 0.4), ["maximize", "maximize"])  # equal is not better
    assert non_dominated([], ["minimize", "minimize"]) == []


def test_the_pareto_figure_marks_the_front():
    fig = plots.pareto_figure([("#0", 1.2, 0.5, True), ("#1", 1.1, 0.45, False), ("#2", 1.5, 0.4, True)],
                              ("multiplier", "similarity"), ("maximize", "maximize"))
    ax = fig.axes[0]
    [line] = ax.get_lines()
    assert list(line.get_xdata()) == [1.2, 1.5]  # the front joined along the first objective
    assert "maximize" in ax.get_xlabel() and plots.png(fig).startswith(b"\x89PNG")
    plots.close(fig)
