"""Tiny real chat models for generation and pipeline tests, built in seconds without any download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from synpro.generation.backends import continuation
from synpro.generation.chunking import split_chunks
from synpro.generation.operations import OPERATIONS

REPHRASE = OPERATIONS.get("rephrase")

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
STEPS = 100  # enough for greedy decoding to repeat the whole answer, EOS included, after any prompt
PARROT_ANSWER = ("The statement evaluates its expression and then runs the block that follows it, so each "
                 "branch of the program stays easy to read and to test.")


def doc_topics(n: int, min_chars: int = 300) -> list[str]:
    from pydoc_data.topics import topics

    texts = [topics[k].strip() for k in sorted(topics)]
    return [t[:2500] for t in texts if len(t) >= min_chars][:n]


def train_tokenizer(texts: list[str], vocab_size: int, specials: list[str]):
    """A byte-level BPE trained here: a real tokenizer without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=specials[0], pad_token=specials[-1])


def _chat_tokenizer():
    tokenizer = train_tokenizer(doc_topics(30) + [PARROT_ANSWER] * 20, 500, ["<|im_end|>", "<|im_start|>", "<|pad|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama(vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         eos_token_id=0, pad_token_id=2, bos_token_id=None)
    return LlamaForCausalLM(config)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `build` once per test session: under pytest-xdist the workers share one
    (the first builds it under a lock, the others wait for it), so tests must only read it."""
    from synpro.core.fs import dir_lock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's base is a folder of the session's own
        root = root.parent
    folder, built = root / name, root / f".{name}.built"  # the mark beside the folder: its files are hashed
    with dir_lock(folder):
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died half way
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


def _build_random_model(folder: Path) -> None:
    tokenizer = _chat_tokenizer()
    _llama(len(tokenizer), seed=0).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A tiny random chat model: mechanics only (its outputs fail every filter)."""
    return built_once(tmp_path_factory, "random-model", _build_random_model)


@pytest.fixture(scope="session")
def parrot_model(tmp_path_factory) -> Path:
    """A tiny chat model trained to continue any rephrase prompt's heading with PARROT_ANSWER, so outputs pass."""
    return built_once(tmp_path_factory, "parrot-model", _build_parrot_model)


def _build_parrot_model(folder: Path) -> None:
    tokenizer = _chat_tokenizer()
    model = _llama(len(tokenizer), seed=1)
    answer = tokenizer(PARROT_ANSWER, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    texts = [c for d in doc_topics(12) for c in split_chunks(d, 500)]
    chats = [REPHRASE.messages(t) for t in texts]
    prompts = [tokenizer.apply_chat_template(c, return_dict=False, **continuation(c)) for c in chats]
    rows = [torch.tensor(p + answer) for p in prompts]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)
    labels = ids.masked_fill(mask == 0, -100)
    for row, prompt in zip(labels, prompts):
        row[:len(prompt)] = -100  # learn the answer only
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(STEPS):
        pick = torch.arange(step * 8, step * 8 + 8) % len(rows)
        loss = model(input_ids=ids[pick], attention_mask=mask[pick], labels=labels[pick]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
