"""Device and precision choices shared by the stages that run a model (probe, influence, evaluation, GRPO).

On CUDA, fp32 paths run their matmuls in TF32 (set here explicitly, not left to torch's default, which is
off for matmuls): ~8x the fp32 rate on A100/H100 with a 10-bit mantissa, where the alternative is hours
of a probe or an influence pass. Nothing here changes a CPU run.
"""

from __future__ import annotations

from typing import Any


def pick_device(device: str) -> str:
    """`auto`: the first GPU when CUDA is present, else the CPU; anything else as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def on_cuda(device: str) -> bool:
    return pick_device(device).startswith("cuda")


def dtype_of(precision: str | None) -> Any:
    """The weights' dtype for a spec's precision (None: fp32)."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def allow_tf32(device: str) -> None:
    """TF32 matmuls and cuDNN convolutions for the fp32 work on a CUDA device; a no-op elsewhere."""
    import torch

    if on_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
