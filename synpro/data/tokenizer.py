"""The tokenizer: a byte-level BPE trained on organic text only (the data-bound setting), or a pretrained one.

Either way it ends up as a standard Hugging Face folder that `AutoTokenizer.from_pretrained` loads,
so later stages (training, generation, probes) read it from disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from synpro.errors import InputError
from synpro.models import Vocab
from synpro.spec import Spec

if TYPE_CHECKING:  # transformers is heavy; import it where it is used
    from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"  # both bos and eos, GPT-2 style
PAD = "<|pad|>"


def train_bpe(texts: Sequence[str], vocab_size: int) -> "PreTrainedTokenizerFast":
    """A byte-level BPE (no unknown tokens, lossless round trip) with EOT and PAD as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOT, eos_token=EOT, pad_token=PAD)


def load_pretrained(spec: Spec) -> "PreTrainedTokenizerFast":
    """tokenizer.name as a local folder (relative to the spec file) or a Hub id already in the HF cache."""
    from transformers import AutoTokenizer

    name = spec.tokenizer.name or ""
    local = Path(name).expanduser()
    if not local.is_absolute() and spec.source_file and (Path(spec.source_file).parent / local).exists():
        name = str(Path(spec.source_file).parent / local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise InputError.one(f"cannot load tokenizer {spec.tokenizer.name!r}: {exc}", file=spec.source_file,
                             key="tokenizer.name",
                             hint="give a local tokenizer folder, or a Hub id already in the Hugging Face "
                                  "cache (this machine may be offline)") from None
    problem = ("it is not a fast (tokenizers-backed) tokenizer" if not tokenizer.is_fast
               else "it has no end-of-text (eos) token" if tokenizer.eos_token_id is None else None)
    if problem:
        raise InputError.one(f"tokenizer {spec.tokenizer.name!r} cannot be used: {problem}",
                             file=spec.source_file, key="tokenizer.name")
    if tokenizer.pad_token_id is None:  # padding never reaches the loss; reusing eos is the usual choice
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def vocab_of(tokenizer: "PreTrainedTokenizerFast") -> Vocab:
    """Embedding size and special ids; a tokenizer without bos starts documents with eos."""
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    return Vocab(size=len(tokenizer), bos_id=eos if bos is None else bos, eos_id=eos, pad_id=tokenizer.pad_token_id)


def save_tokenizer(tokenizer: "PreTrainedTokenizerFast", directory: Path) -> Vocab:
    tokenizer.save_pretrained(str(directory))
    return vocab_of(tokenizer)


def load_tokenizer(directory: Path) -> "PreTrainedTokenizerFast":
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def encode_batch(tokenizer: "PreTrainedTokenizerFast", texts: Iterable[str]) -> list[list[int]]:
    """Token ids per text without special tokens, via the Rust backend's batch encoder (no offsets: fast)."""
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]


def prefix_text(tokenizer: "PreTrainedTokenizerFast", text: str, n_tokens: int) -> str:
    """The part of text that its first n_tokens tokens cover (what a cut-off document keeps)."""
    if n_tokens <= 0:
        return ""
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    return text[:encoding.offsets[n_tokens - 1][1]]
