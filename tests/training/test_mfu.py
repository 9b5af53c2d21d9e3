"""MFU: the FLOPs a token costs, against a count by hand for the tiny model, and the peak table."""

from __future__ import annotations

import pytest
import torch

from synpro.models import ModelSpec, Vocab
from synpro.training.mfu import flops_per_token, mfu, peak_flops
from synpro.training.trainer import _build_model


def test_flops_per_token_of_the_tiny_model_match_a_hand_count():
    model = _build_model(ModelSpec(preset="tiny"), Vocab(size=64, bos_id=1, eos_id=2, pad_id=0), 32, None)
    d, layers, ffn, vocab, seq = 64, 2, 256, 64, 32
    per_layer = 4 * d * d + 3 * d * ffn + 4 * d  # q, k, v, o; gate, up, down; q/k norms and two RMSNorms
    n = layers * per_layer + d + vocab * d  # + the final norm and the output head (the input embedding is a lookup)
    assert n == 135_744
    assert flops_per_token(model, seq) == 6 * n + 12 * layers * d * seq == 863_616


def test_mfu_is_left_out_without_a_peak_and_divides_by_every_device(monkeypatch):
    monkeypatch.delenv("SYNPRO_PEAK_TFLOPS", raising=False)
    assert peak_flops(torch.device("cpu"), "bf16") is None
    assert mfu(863_616, 1e6, None) is None
    monkeypatch.setenv("SYNPRO_PEAK_TFLOPS", "2")
    assert peak_flops(torch.device("cpu"), "fp32") == 2e12
    assert mfu(1_000_000, 1e6, 2e12, devices=2) == pytest.approx(0.25)
