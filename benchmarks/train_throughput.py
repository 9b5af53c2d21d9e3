"""Tokens/s of SynPro's `train` against a bare PyTorch loop doing the same work.

Both sides build the same OLMo-2 model, read the same token shard, and run AdamW with the same
batch, gradient accumulation and clipping. The bare loop slices a preloaded tensor; `train` pays
for its loader, LR schedule, bookkeeping, its two one-window evaluations (tokens=0 and end), one
checkpoint and the final save (evaluation interval set beyond the run). Runs alternate ABBA after
a warm-up so machine drift hits both sides alike; the headline ratio is the median over rounds of
each round's ratio, which cancels load that changes between rounds. Wall-clock is the figure; the
same ratio by CPU time is printed too, as a check less sensitive to other processes sharing the
machine (it does not count time spent waiting on the disk).

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py            # ~1.5 min on 1 CPU thread
    python benchmarks/train_throughput.py --steps 50 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synpro.data.shards import TokenShard, write_shard
from synpro.models import ModelSpec, Vocab
from synpro.spec import TrainingSpec
from synpro.training import train


def bare_loop(model_spec: ModelSpec, training: TrainingSpec, vocab: Vocab, shard: TokenShard,
              steps: int, seed: int) -> None:
    """`steps` optimizer steps of the plainest loop that does the same work."""
    from transformers import Olmo2ForCausalLM

    data = torch.from_numpy(np.asarray(shard.tokens(), dtype=np.int64))
    data = data[: len(data) // training.seq_len * training.seq_len].view(-1, training.seq_len)
    micro = training.micro_batch_size or training.batch_size
    torch.manual_seed(seed)
    model = Olmo2ForCausalLM(model_spec.hf_config(vocab, training.seq_len))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, betas=training.betas,
                                  weight_decay=training.weight_decay)
    for step in range(steps):
        rows = torch.arange(step * training.batch_size, (step + 1) * training.batch_size) % len(data)
        for ids in data[rows].split(micro):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss / (training.batch_size // micro)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def synpro_train(model_spec: ModelSpec, training: TrainingSpec, vocab: Vocab, shard: TokenShard,
                 validation: TokenShard, steps: int, seed: int, out_dir: Path) -> None:
    result = train(model=model_spec, training=training, vocab=vocab, sources=[shard],
                   total_tokens=steps * training.tokens_per_step, validation=validation,
                   out_dir=out_dir, seed=seed, progress=False)
    assert result.steps == steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (2 runs per side each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    vocab = Vocab(size=args.vocab, bos_id=1, eos_id=2, pad_id=0)
    model_spec = ModelSpec(preset=args.preset)
    training = TrainingSpec(lr=3e-3, warmup_tokens=0, batch_size=args.batch_size,
                            micro_batch_size=args.micro_batch_size, seq_len=args.seq_len,
                            eval_interval_tokens=10**15, device="cpu")
    tokens = args.steps * training.tokens_per_step
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shard = write_shard(root / "train", [rng.integers(3, args.vocab, tokens).tolist()], args.vocab, name="train")
        validation = write_shard(root / "val", [rng.integers(3, args.vocab, args.seq_len).tolist()],
                                 args.vocab, name="val")
        runs = 0

        def measure(side: str, steps: int) -> tuple[float, float]:
            """(wall-clock, CPU-time) tokens/s of one run."""
            nonlocal runs
            runs += 1
            wall, cpu = time.perf_counter(), time.process_time()
            if side == "bare":
                bare_loop(model_spec, training, vocab, shard, steps, seed=0)
            else:
                synpro_train(model_spec, training, vocab, shard, validation, steps, seed=0,
                             out_dir=root / f"run{runs}")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return steps * training.tokens_per_step / wall, steps * training.tokens_per_step / cpu

        for side in ("bare", "synpro"):  # warm-up: first-call allocations and lazy imports
            measure(side, 2)
        rates: dict[str, list[float]] = {"bare": [], "synpro": []}
        cpu_rates: dict[str, list[float]] = {"bare": [], "synpro": []}
        for _ in range(args.rounds):
            for side in ("bare", "synpro", "synpro", "bare"):
                wall, cpu = measure(side, args.steps)
                rates[side].append(wall)
                cpu_rates[side].append(cpu)

    median = {side: statistics.median(values) for side, values in rates.items()}
    cpu_median = {side: statistics.median(values) for side, values in cpu_rates.items()}
    print(f"model {args.preset}, {training.tokens_per_step} tokens/step "
          f"({args.batch_size}x{args.seq_len}, micro-batch {args.micro_batch_size}), "
          f"{args.steps} steps/run, {len(rates['bare'])} runs/side, {args.threads} thread(s)")
    for side, values in rates.items():
        print(f"{side:>7}: median {median[side]:8,.0f} tokens/s  "
              f"(runs: {', '.join(f'{v:,.0f}' for v in values)}; CPU-time median {cpu_median[side]:,.0f})")
    ratios, cpu_ratios = _round_ratios(rates), _round_ratios(cpu_rates)
    print(f"  ratio: {statistics.median(ratios):.3f} synpro / bare, wall-clock "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; by CPU time {statistics.median(cpu_ratios):.3f})")


def _round_ratios(rates: dict[str, list[float]]) -> list[float]:
    """Per ABBA round: synpro's tokens/s over bare's, each side's two runs pooled by time."""
    def pooled(values: list[float]) -> float:
        return len(values) / sum(1 / v for v in values)

    return [pooled(rates["synpro"][i:i + 2]) / pooled(rates["bare"][i:i + 2])
            for i in range(0, len(rates["bare"]), 2)]


if __name__ == "__main__":
    main()
