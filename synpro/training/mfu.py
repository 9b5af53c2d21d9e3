"""Model FLOPs utilisation (MFU): the model FLOPs a token costs × tokens/s, over the device's peak.

FLOPs per token follow PaLM (appendix B), as torchtitan counts them: `6·N` for the forward and
backward matmuls over the N parameters that multiply (every parameter but the input embedding,
a lookup; the output head counts) plus `12·L·d·T` for the attention scores and their weighted
sum (L layers, d = heads × head size, T the sequence length; the causal mask is not halved).
Model FLOPs, not hardware FLOPs: activation checkpointing's recomputed forward is not counted, so
MFU stays comparable across that choice.

Peaks are dense (no sparsity) per GPU, by the name CUDA reports, for the precision trained in:
bf16 tensor cores, or plain fp32 (torch leaves TF32 off for matmuls by default). A CPU, or a GPU
not in the table, has no peak and MFU is left out (None); `SYNPRO_PEAK_TFLOPS` sets one by hand.
"""

from __future__ import annotations

import os

import torch

# (name fragment as torch.cuda.get_device_name shows it, bf16 dense TFLOPs, fp32 TFLOPs); first match wins,
# so more specific names come first (H100 PCIe before H100, L40S before L4, A100 before A10G before A10).
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("B200", 2250.0, 80.0),
    ("H200", 989.4, 66.9),
    ("H100 PCIe", 756.0, 51.2),
    ("H100", 989.4, 66.9),  # SXM, and GH200's H100
    ("H800", 989.4, 66.9),
    ("A100", 312.0, 19.5),
    ("L40S", 362.1, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("RTX 4090", 165.2, 82.6),
)


def flops_per_token(model: torch.nn.Module, seq_len: int) -> int:
    """Training FLOPs (forward + backward) one token costs this causal LM at `seq_len` (module docstring)."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embedding
    n = sum(p.numel() for p in model.parameters()) - (0 if tied else embedding.numel())
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's peak FLOP/s for `precision` ("bf16" | "fp32"), or None where unknown (a CPU)."""
    manual = os.environ.get("SYNPRO_PEAK_TFLOPS")
    if manual:
        return float(manual) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, bf16, fp32 in PEAK_TFLOPS:
        if fragment in name:
            return (bf16 if precision == "bf16" else fp32) * 1e12
    return None


def mfu(flops_token: int, tokens_per_second: float, peak: float | None, devices: int = 1) -> float | None:
    """The share of `devices` × `peak` that `tokens_per_second` (all devices together) uses; None without a peak."""
    if not peak or tokens_per_second <= 0:
        return None
    return flops_token * tokens_per_second / (peak * devices)
