"""Masked next-token losses of a batch of variable-length sequences: the one loss the probe trains on and
the influence scorer measures.

Sequences are right-padded; the attention mask hides the padding from every real token, and only the
targets from `first_scored[i]` to the sequence's end count. So a sequence's loss is the same in any batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch


def sequence_losses(model: "torch.nn.Module", seqs: Sequence[Sequence[int]], first_scored: Sequence[int],
                    pad_id: int, device: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(summed cross-entropy, number of scored targets) per sequence. Target j is token j predicted from
    tokens < j; it is scored when first_scored[i] <= j < len(seqs[i])."""
    import torch
    import torch.nn.functional as F

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attend = torch.zeros((len(seqs), width), dtype=torch.long)
    scored = torch.zeros((len(seqs), width), dtype=torch.float32)
    for row, (seq, first) in enumerate(zip(seqs, first_scored)):
        ids[row, :len(seq)] = torch.tensor(list(seq))
        attend[row, :len(seq)] = 1
        scored[row, max(first, 1):len(seq)] = 1
    ids, attend, scored = ids.to(device), attend.to(device), scored.to(device)
    logits = model(input_ids=ids, attention_mask=attend).logits
    keep = scored[:, 1:].bool()  # only scored targets reach the (vocabulary-wide) softmax
    ce = F.cross_entropy(logits[:, :-1][keep].float(), ids[:, 1:][keep], reduction="none")
    rows = torch.arange(len(seqs), device=device).unsqueeze(1).expand_as(keep)[keep]
    return torch.zeros(len(seqs), device=device).index_add(0, rows, ce), scored[:, 1:].sum(1)
