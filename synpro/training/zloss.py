"""z-loss (PaLM, OLMo-2): a penalty on the softmax normaliser that keeps large models' logits from drifting.

z = logsumexp of a position's logits; the term is coefficient * mean(z^2) over the positions that
have a next-token target (all but the last, as the causal-LM loss shifts labels by one). It is
computed in float32 from the logits the forward already returns.
"""

from __future__ import annotations

import torch


def z_loss(logits: torch.Tensor, coefficient: float) -> torch.Tensor | float:
    """coefficient * mean(logsumexp(logits)^2); a plain 0.0 (no work) when the coefficient is 0."""
    if coefficient == 0:
        return 0.0
    z = torch.logsumexp(logits[:, :-1].float(), dim=-1)
    return coefficient * z.pow(2).mean()
