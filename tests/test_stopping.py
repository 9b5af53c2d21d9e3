"""Stop conditions: a plateau on validation loss and a fixed token count, with state that survives."""

from synpro.training.result import EvalPoint
from synpro.training.stopping import Plateau, StopAt


def _points(losses, step=1000):
    return [EvalPoint(i * step, i, loss, None if i == 0 else loss) for i, loss in enumerate(losses)]


def test_plateau_stops_once_the_window_improves_less_than_the_threshold():
    detector = Plateau(window=2, min_improvement=0.01)
    decisions = [detector.on_eval(p) for p in _points([5.0, 4.0, 3.0, 2.9, 2.89, 2.885])]
    # tokens=0 is ignored; 2.9 → 2.885 over the last two evaluations is 0.5% < 1%: stop there.
    assert decisions == [False, False, False, False, False, True]


def test_plateau_waits_for_min_tokens_and_restores_its_state():
    detector = Plateau(window=1, min_improvement=0.5, min_tokens=3000)
    points = _points([5.0, 4.9, 4.8, 4.7])
    assert [detector.on_eval(p) for p in points[:3]] == [False, False, False]  # flat, but before 3000 tokens
    resumed = Plateau(window=1, min_improvement=0.5, min_tokens=3000)
    resumed.load_state_dict(detector.state_dict())
    assert resumed.on_eval(points[3]) is True


def test_stop_at_a_token_count():
    stop = StopAt(2000)
    assert [stop.on_eval(p) for p in _points([3.0, 2.0, 1.0])] == [False, False, True]
