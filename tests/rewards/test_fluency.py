"""The offline quality scorer ranks held-out clean paragraphs above degraded copies of them."""

import numpy as np
import pytest

from synpro.rewards.fluency import DEGRADATIONS, degrade, fit, manual_paragraphs


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a random positive outranks a random negative), ties counting half."""
    return float(np.mean(positive[:, None] > negative[None, :]) + 0.5 * np.mean(positive[:, None] == negative[None, :]))


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_clean_paragraphs_outrank_degraded_ones_on_held_out_text(kind):
    paragraphs = manual_paragraphs()
    cut = int(0.8 * len(paragraphs))  # the last topics (by name) are never seen in fitting
    model = fit(paragraphs[:cut], seed=0)
    held = paragraphs[cut:]
    rng = np.random.default_rng(1)
    degraded = [degrade(p, kind, rng) for p in held]
    assert len(held) >= 100
    assert auc(model.probability(held), model.probability(degraded)) >= 0.9
