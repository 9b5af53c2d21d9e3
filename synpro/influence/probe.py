"""The probe: θ′ = θ plus K optimizer steps on the reference task (paper: 100 AdamW steps, constant lr 1e-4,
no warmup, weight decay 0.1, loss on response tokens only).

- An example is [BOS] + prompt + "\n" + response + [EOS], cut to `max_tokens`; only the response tokens
  (EOS included) are targets. Examples whose response is cut away entirely are dropped.
- The pairs are shuffled with the seed; the first `eval_examples` are held out of the steps and give the
  reference loss before -> after (token mean over their responses). Steps cycle over the rest, reshuffled
  each pass; a step's loss is the token mean over its whole batch, micro-batched for memory.
- The optimizer starts fresh (the trainer's final/ folder holds weights only; the release continues θ's
  optimizer state).
- θ′ is written into a temporary sibling folder and renamed onto out_dir with `probe.json` inside, under
  out_dir's lock, so out_dir either holds a finished probe or nothing. A folder whose probe.json has this
  probe's key is reused; the lead's stage runner may give the key (`probe_key`) and the folder instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from synpro.core.faults import kill_point
from synpro.core.fs import atomic_dir, dir_lock
from synpro.core.hashing import stable_hash
from synpro.errors import InputError
from synpro.influence.losses import sequence_losses
from synpro.influence.scoring import PROBE_MANIFEST, pick_device

if TYPE_CHECKING:
    import torch

    from synpro.spec import ProbeSpec

VERSION = 1
SEPARATOR = "\n"  # between prompt and response


@dataclass(frozen=True)
class ProbeResult:
    out_dir: Path  # θ′, an HF model folder
    key: str
    loss_before: float
    loss_after: float
    train_examples: int
    eval_examples: int
    settings: dict
    reused: bool = False

    def manifest(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data.pop("reused")
        return data


def probe_key(checkpoint_dir: Path, reference: Sequence[dict], config: "ProbeSpec", seed: int) -> str:
    """Names θ (its weight files' names, sizes and mtimes: cheap for a 1B model), the pairs and the settings."""
    checkpoint_dir = Path(checkpoint_dir).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in checkpoint_dir.iterdir() if p.is_file())
    return stable_hash("probe", VERSION, str(checkpoint_dir), files, stable_hash(list(reference)),
                       config.model_dump(mode="json", exclude={"device"}), seed)


def require_checkpoint(checkpoint_dir: Path) -> Path:
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "config.json").exists():
        raise InputError.one(f"no checkpoint at {checkpoint_dir} (no config.json)", key="--checkpoint",
                             hint="pass a trained model folder (an arm's final/ folder), or --arm NAME after "
                                  "`synpro sweep` has trained that arm")
    return checkpoint_dir


def run_probe(checkpoint_dir: Path, tokenizer_dir: Path, reference: Sequence[dict], config: "ProbeSpec",
              out_dir: Path, *, seed: int = 0) -> ProbeResult:
    """Fine-tune a copy of θ into out_dir (or reuse the probe already there); θ itself is never written."""
    checkpoint_dir, out_dir = require_checkpoint(checkpoint_dir), Path(out_dir)
    key = probe_key(checkpoint_dir, reference, config, seed)
    with dir_lock(out_dir):
        if (out_dir / PROBE_MANIFEST).exists():
            done = json.loads((out_dir / PROBE_MANIFEST).read_text())
            if done["key"] != key:
                raise InputError.one(f"{out_dir} holds a probe of another checkpoint, reference set or settings",
                                     key="--out", hint="choose another output folder, or delete that one")
            return ProbeResult(**{**done, "out_dir": out_dir, "reused": True})
        if out_dir.exists() and any(out_dir.iterdir()):
            raise InputError.one(f"{out_dir} holds files that are not a probe", key="--out",
                                 hint="choose an empty or new output folder")
        return _train(checkpoint_dir, tokenizer_dir, reference, config, out_dir, seed, key)


def _train(checkpoint_dir: Path, tokenizer_dir: Path, reference: Sequence[dict], config: "ProbeSpec", out_dir: Path,
           seed: int, key: str) -> ProbeResult:
    import torch

    from synpro.data.tokenizer import load_tokenizer
    from synpro.influence.scoring import load_causal_lm

    device = pick_device(config.device)
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    model = load_causal_lm(checkpoint_dir, device, "checkpoint θ", "--checkpoint")
    if config.precision == "bf16":
        model = model.to(torch.bfloat16)
    examples = _encode(tokenizer, reference, config.max_tokens)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples)).tolist()
    held = min(config.eval_examples, len(examples) // 2)
    evaluation, train = [examples[i] for i in order[:held]], [examples[i] for i in order[held:]]
    if not evaluation or not train:
        raise InputError.one(f"the reference set has {len(examples)} usable examples; the probe needs at least 2",
                             key="probe.reference", hint="give more prompt/response pairs, or raise probe.max_tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    micro = config.micro_batch_size or config.batch_size
    before = _eval_loss(model, evaluation, pad, device, micro)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    model.train()
    stream = _cycle(train, rng)
    for _ in range(config.steps):
        batch = [next(stream) for _ in range(config.batch_size)]
        total = sum(len(seq) - first for seq, first in batch)
        for start in range(0, len(batch), micro):
            part = batch[start:start + micro]
            sums, _ = sequence_losses(model, [s for s, _ in part], [f for _, f in part], pad, device)
            (sums.sum() / total).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    after = _eval_loss(model, evaluation, pad, device, micro)
    result = ProbeResult(out_dir, key, before, after, len(train), len(evaluation),
                         {"version": VERSION, "seed": seed, "checkpoint": str(checkpoint_dir.resolve()),
                          **config.model_dump(mode="json")})
    _save(model, result)
    kill_point("probe.saved")
    return result


def _encode(tokenizer, pairs: Sequence[dict], max_tokens: int) -> list[tuple[list[int], int]]:
    """(token ids, index of the first response token) per usable example."""
    from synpro.data.tokenizer import encode_batch

    eos = tokenizer.eos_token_id
    bos = eos if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    prompts = encode_batch(tokenizer, [p["prompt"] + SEPARATOR for p in pairs])
    responses = encode_batch(tokenizer, [p["response"] for p in pairs])
    out = []
    for prompt, response in zip(prompts, responses):
        seq = ([bos] + prompt + response + [eos])[:max_tokens]
        if len(seq) > 1 + len(prompt):
            out.append((seq, 1 + len(prompt)))
    return out


def _cycle(examples: list, rng: np.random.Generator):
    while True:
        for i in rng.permutation(len(examples)):
            yield examples[i]


def _eval_loss(model: "torch.nn.Module", examples: list[tuple[list[int], int]], pad: int, device: str,
               micro: int) -> float:
    import torch

    was_training = model.training
    model.eval()
    total = count = 0.0
    with torch.inference_mode():
        for start in range(0, len(examples), micro):
            part = examples[start:start + micro]
            sums, counts = sequence_losses(model, [s for s, _ in part], [f for _, f in part], pad, device)
            total, count = total + sums.sum().item(), count + counts.sum().item()
    model.train(was_training)
    return total / max(count, 1)


def _save(model: "torch.nn.Module", result: ProbeResult) -> None:
    with atomic_dir(result.out_dir) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / PROBE_MANIFEST).write_text(json.dumps(result.manifest(), indent=1))

def probe_from_spec(spec, checkpoint_dir: Path, tokenizer_dir: Path, out_dir: Path | None = None) -> ProbeResult:
    """The spec's probe of checkpoint_dir: its reference set loaded (the builtin one from SynPro's cache),
    run or reused in out_dir (default: <workdir>/stages/probe-<key>)."""
    from synpro.influence.reference import load_reference

    base = Path(spec.source_file).parent if spec.source_file else None
    pairs = load_reference(spec.probe.reference, base=base)
    if out_dir is None:
        require_checkpoint(checkpoint_dir)
        out_dir = spec.workdir / "stages" / f"probe-{probe_key(checkpoint_dir, pairs, spec.probe, spec.experiment.seed)}"
    return run_probe(checkpoint_dir, tokenizer_dir, pairs, spec.probe, out_dir, seed=spec.experiment.seed)
