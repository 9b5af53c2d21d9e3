"""A tiny OLMo-2 checkpoint θ pretrained a little on the builtin corpus, with its tokenizer: built in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from generators import built_once

PRETRAIN_STEPS = 60


def pretrain_tiny(folder: Path, steps: int = PRETRAIN_STEPS, seed: int = 0) -> tuple[Path, Path]:
    """(model folder, tokenizer folder): a BPE and a 2-layer OLMo-2 trained on CPython's reference topics."""
    from pydoc_data.topics import topics
    from transformers import Olmo2ForCausalLM

    from synpro.data.tokenizer import encode_batch, save_tokenizer, train_bpe
    from synpro.models import ModelSpec

    texts = [topics[k] for k in sorted(topics)]
    tokenizer = train_bpe(texts, 1024)
    vocab = save_tokenizer(tokenizer, folder / "tokenizer")
    torch.manual_seed(seed)
    model = Olmo2ForCausalLM(ModelSpec(preset="tiny").hf_config(vocab, 256))
    stream = torch.tensor([t for ids in encode_batch(tokenizer, texts) for t in ids + [vocab.eos_id]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - 129, (16,), generator=generator)
        batch = torch.stack([stream[s:s + 128] for s in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(folder / "theta"))
    return folder / "theta", folder / "tokenizer"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    folder = built_once(tmp_path_factory, "theta", pretrain_tiny)  # one for every pytest-xdist worker
    return folder / "theta", folder / "tokenizer"
