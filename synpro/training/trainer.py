"""Pretraining loop: an OLMo-2 causal LM trained on mixed token shards to a token budget.

Choices worth knowing (see also the loader and schedule modules):

- Steps: `ceil(total_tokens / (batch_size * seq_len))`, so the budget is always reached and
  overshot by less than one batch.
- Weight decay applies to the linear weight matrices (attention, MLP, output head) only; norms and
  the input embedding are not decayed (as in OLMo-2: decaying embeddings shrinks rare tokens).
- The LR of a step is the schedule at the tokens seen after that step, so the first warmup step
  already learns.
- Evaluation at tokens=0 (a fresh run only; the start of the learning curve, and for `init_from`
  the loss the continued run starts from), every `eval_interval_tokens`, and at the end. A point's
  `train_loss` is the mean training loss of the steps since the previous point (cross-entropy, plus
  the z-loss term when `training.z_loss` > 0; validation loss is cross-entropy only).
- Checkpoint at every evaluation except tokens=0. The latest is kept, and so is the first one at or
  after each of `keep_tokens` (an evaluation is forced where a step crosses such a count): those are
  the points a later round continues from (`checkpoints/TAGS` maps each count to its checkpoint).
  The learning curve lives in `out_dir/curve.jsonl` and inside each checkpoint; on resume the file
  is rewritten from the checkpoint, so it never holds duplicate or lost points.
- Continuing (`continue_from`, a checkpoint of another run): model, optimizer state, step and token
  count come from it, the data loader starts fresh on this run's mixture (torchtitan's rule for a
  new data mixture), and the curve starts with the parent's points: one token axis, one learning
  curve, one LR schedule over `total_tokens` counted from the original start. `init_from` (weights
  only, fresh optimizer and token count) stays for fine-tuning-like uses.
- Snapshots (`snapshot_every`): the model of the first checkpoint at or after each multiple of that
  many tokens, and the last one, kept as `snapshots/tokens-NNNNNNNNNNNN/` (hard links into the
  checkpoint, so they cost nothing until it is deleted) for evaluation after training.
- Callbacks may ask to stop (`on_eval` returning True): the run ends after that point's checkpoint,
  as a finished run with `stopped_early` set. Callbacks that have `state_dict`/`load_state_dict`
  are saved in every checkpoint, so a plateau detector survives a kill.
- `out_dir/run.json` records what the run trains; reusing a folder for a different run is an error.
- Pre-emption (`synpro.core.preempt`): on SIGTERM or SIGUSR2 the run checkpoints after the step in
  flight and raises `Preempted`; every rank agrees on the step (one all-reduce per step). With
  `training.checkpoint_minutes` it also checkpoints when that much wall-clock time passed since the
  last checkpoint. Such a checkpoint adds no curve point and keeps the partial train-loss sum (its
  mean over ranks), so a resumed run gives the same curve as an uninterrupted one.

- Parallelism under torchrun (`training.parallelism`): `ddp` keeps a full model per rank;
  `fsdp` shards parameters, gradients and optimizer state with FSDP2 (`fully_shard` per decoder
  block, then the root). Either way rank 0 writes checkpoints in one format (a full HF model folder
  and the plain `optimizer.state_dict()` layout; FSDP gathers them first), so a checkpoint resumes
  under any number of ranks. With one process there is nothing to shard and fsdp trains as one process.
- `training.activation_checkpointing` recomputes each block's activations in the backward pass
  (transformers' gradient checkpointing, non-reentrant): less memory, the same numbers.
- MFU (`synpro.training.mfu`): model FLOPs per token × tokens/s over the devices' peak, live in the
  progress bar and in the result (`mfu`, None on a CPU or an unknown GPU).

Layout of `out_dir`: run.json, curve.jsonl, checkpoints/LATEST (names the committed checkpoint),
checkpoints/TAGS, checkpoints/step-NNNNNNNNN/{model/, state.pt}, snapshots/tokens-N/ (HF model
folders), final/ (HF model folder), result.json (written last: the run's result; a folder with it is returned as is).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from synpro.core import preempt
from synpro.core.faults import kill_point
from synpro.core.fs import atomic_dir, link_tree, write_atomic
from synpro.data.shards import TokenShard
from synpro.models import ModelSpec, Vocab
from synpro.spec import TrainingSpec
from synpro.training.callbacks import Callback, RichProgress
from synpro.training.result import EvalPoint, TrainResult
from synpro.training.loader import TokenLoader, _windows, eval_batches
from synpro.training.mfu import flops_per_token, mfu, peak_flops
from synpro.training.schedule import learning_rate
from synpro.training.zloss import z_loss

log = logging.getLogger(__name__)

RESULT = "result.json"
TAGS = "TAGS"
SNAPSHOTS = "snapshots"
CURVE = "curve.jsonl"
RUN_CONFIG = "run.json"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
FINAL = "final"


def train(*, model: ModelSpec, training: TrainingSpec, vocab: Vocab, sources: list[TokenShard],
          total_tokens: int, validation: TokenShard, out_dir: Path, seed: int,
          callbacks: Sequence[Callback] = (), init_from: Path | None = None,
          continue_from: Path | None = None, keep_tokens: Sequence[int] = (),
          snapshot_every: int | None = None, progress: bool = True,
          source_weights: Sequence[float] | None = None) -> TrainResult:
    """Train (or resume, or return the finished result of) the run kept in `out_dir`.

    `source_weights` (one per source): each source's share of the windows trained (`TokenLoader`); None
    mixes the sources by token count.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; the global batch is split across ranks
    and only rank 0 writes files or calls callbacks.
    """
    out_dir = Path(out_dir)
    config = _run_config(model=model, training=training, vocab=vocab, sources=sources,
                         total_tokens=total_tokens, validation=validation, seed=seed, init_from=init_from,
                         continue_from=continue_from, keep_tokens=keep_tokens, snapshot_every=snapshot_every,
                         source_weights=source_weights)
    _check_same_run(out_dir, config)
    if (out_dir / RESULT).exists():
        return TrainResult.from_json((out_dir / RESULT).read_text())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(training.device, int(os.environ.get("LOCAL_RANK", "0")))
    with _process_group(device, world_size):
        rank = dist.get_rank() if world_size > 1 else 0
        if rank == 0 and not (out_dir / RUN_CONFIG).exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(out_dir / RUN_CONFIG, json.dumps(config, indent=1))
        trainer = _Trainer(model=model, training=training, vocab=vocab, sources=sources,
                           total_tokens=total_tokens, validation=validation, out_dir=out_dir,
                           seed=seed, init_from=init_from, continue_from=continue_from,
                           keep_tokens=keep_tokens, snapshot_every=snapshot_every, device=device, rank=rank,
                           world_size=world_size, callbacks=list(callbacks) if rank == 0 else [],
                           source_weights=source_weights)
        if progress and rank == 0:
            with RichProgress(trainer.n_steps * training.tokens_per_step, trainer.tokens,
                              flops_per_token=trainer.flops_per_token,
                              peak=trainer.peak * world_size if trainer.peak else None) as bar:
                trainer.callbacks.append(bar)
                return trainer.fit()
        return trainer.fit()


class _Trainer:
    def __init__(self, *, model: ModelSpec, training: TrainingSpec, vocab: Vocab,
                 sources: list[TokenShard], total_tokens: int, validation: TokenShard,
                 out_dir: Path, seed: int, init_from: Path | None, continue_from: Path | None,
                 keep_tokens: Sequence[int], snapshot_every: int | None, device: torch.device,
                 rank: int, world_size: int, callbacks: list[Callback],
                 source_weights: Sequence[float] | None = None):
        self.training = training
        self.total_tokens = total_tokens
        self.validation = validation
        self.out_dir = out_dir
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.callbacks = callbacks
        self.n_steps = max(1, math.ceil(total_tokens / training.tokens_per_step))
        # Unset, a rank's micro-batch is its share of the batch: the same step under any number of ranks.
        micro = training.micro_batch_size or max(1, training.batch_size // world_size)
        self.eval_batch_size = micro
        for shard in [*sources, validation]:
            if shard.vocab_size > vocab.size:
                raise ValueError(f"shard {shard.name!r} has vocab size {shard.vocab_size}, "
                                 f"above the model's {vocab.size}")
        if validation.n_tokens < training.seq_len:
            raise ValueError(f"the validation shard holds fewer than seq_len={training.seq_len} tokens")

        self.keep_tokens = sorted(set(keep_tokens))
        self.snapshot_every = snapshot_every
        checkpoint = _latest_checkpoint(out_dir)
        torch.manual_seed(seed)
        weights = (checkpoint or continue_from) / "model" if (checkpoint or continue_from) else init_from
        self.model = _build_model(model, vocab, training.seq_len, weights).to(device)
        self.flops_per_token = flops_per_token(self.model, training.seq_len)
        self.peak = peak_flops(device, training.precision)
        if training.activation_checkpointing:
            _enable_activation_checkpointing(self.model)
        self.model.train()
        self._fsdp = training.parallelism == "fsdp" and world_size > 1
        if self._fsdp:
            _fully_shard(self.model, device, world_size)
        self._ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
                     if world_size > 1 and not self._fsdp else None)
        forward: torch.nn.Module = self._ddp or self.model
        if training.compile and device.type == "cuda":
            forward = torch.compile(forward)
        elif training.compile:
            log.info("compile is ignored off CUDA")
        self._forward = forward
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, training.weight_decay), lr=training.lr, betas=training.betas,
            fused=device.type == "cuda")
        self.loader = TokenLoader(sources, seq_len=training.seq_len, batch_size=training.batch_size,
                                  micro_batch_size=micro, seed=seed, rank=rank, world_size=world_size,
                                  pin_memory=device.type == "cuda", weights=source_weights)

        self.tokens = 0
        self.step = 0
        self.start_tokens = 0
        self.curve: list[EvalPoint] = []
        self.tagged: dict[str, str] = {}
        self._stop = False
        self._seconds_before = 0.0
        self._loss_sum = torch.zeros((), device=device)
        self._loss_steps = 0
        self._resumed_at = 0
        if checkpoint:
            self._load_state(checkpoint)
            self._resumed_at = self.tokens
            log.info("resuming %s from step %d (%d tokens)", out_dir, self.step, self.tokens)
        elif continue_from:
            self._load_state(Path(continue_from), optimizer_only=True)
            self.start_tokens = self.tokens
            log.info("continuing %s from %s (step %d, %d tokens)", out_dir, continue_from, self.step, self.tokens)
        if rank == 0:
            write_atomic(out_dir / CURVE, "".join(_curve_line(p) for p in self.curve))

    # ---- the loop ------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.training.precision == "bf16")

    def fit(self) -> TrainResult:
        with preempt.handling():
            return self._fit()

    def _fit(self) -> TrainResult:
        started = time.perf_counter()
        step_callbacks = [c for c in self.callbacks if type(c).on_step is not Callback.on_step]
        if not self.curve:
            self._record(EvalPoint(0, 0, self._evaluate(), None))
        interval = self.training.eval_interval_tokens
        every = self.training.checkpoint_minutes * 60 if self.training.checkpoint_minutes else None
        last_checkpoint = time.monotonic()
        while self.step < self.n_steps and not self._stop:
            before = self.tokens
            loss, lr = self._train_step(next(self.loader))
            for callback in step_callbacks:
                callback.on_step(self.step, self.tokens, loss, lr)
            crossed_tag = any(before < t <= self.tokens for t in self.keep_tokens)
            seconds = self._seconds_before + time.perf_counter() - started
            if self.tokens // interval > before // interval or crossed_tag or self.step == self.n_steps:
                point = EvalPoint(self.tokens, self.step, self._evaluate(), self._mean_train_loss())
                self._record(point, checkpoint_seconds=seconds)
                last_checkpoint = time.monotonic()
                stop, due = self._agree(preempt.requested() is not None, False)
            else:
                stop, due = self._agree(preempt.requested() is not None,
                                        every is not None and time.monotonic() - last_checkpoint >= every)
                if stop or due:
                    self._save_checkpoint(seconds, interim=True)
                    last_checkpoint = time.monotonic()
            if stop and self.step < self.n_steps:
                log.warning("%s: pre-empted at step %d (%d tokens): checkpointed, stopping", self.out_dir,
                            self.step, self.tokens)
                raise preempt.Preempted(f"{self.out_dir}: stopped at step {self.step} on a pre-emption signal")
        return self._finish(self._seconds_before + time.perf_counter() - started)

    def _agree(self, stop: bool, due: bool) -> tuple[bool, bool]:
        """Every rank's (pre-empted, interim checkpoint due), or-ed over ranks: all act at the same step."""
        if self.world_size == 1:
            return stop, due
        flags = torch.tensor([float(stop), float(due)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())

    def _train_step(self, micro_batches: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
        lr = learning_rate(self.tokens + self.training.tokens_per_step, training=self.training,
                           total_tokens=self.total_tokens)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=self.device)
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            ids = batch.to(self.device, non_blocking=True)
            sync = self._ddp.no_sync() if self._ddp is not None and i < last else nullcontext()
            if self._fsdp:  # reduce-scatter the gradients once, after the last micro-batch
                self.model.set_requires_gradient_sync(i == last)
            with sync:
                with self._autocast():
                    out = self._forward(input_ids=ids, labels=ids, use_cache=False)
                    loss = (out.loss + z_loss(out.logits, self.training.z_loss)) / len(micro_batches)
                loss.backward()
            step_loss += loss.detach()
        if self._fsdp:
            self._clip_sharded()
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.training.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.training.tokens_per_step
        self._loss_sum += step_loss
        self._loss_steps += 1
        return step_loss, lr

    @torch.no_grad()
    def _clip_sharded(self) -> None:
        """`clip_grad_norm_` for FSDP's sharded gradients, as torchtitan does it: the norm over every rank's
        shards (a replicated DTensor), then each rank scales its own shards."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads).full_tensor()
        coef = torch.clamp(self.training.grad_clip / (norm + 1e-6), max=1.0)
        for grad in grads:
            grad.to_local().mul_(coef)

    def _mean_train_loss(self) -> float:
        mean = self._loss_sum / self._loss_steps
        if self.world_size > 1:
            dist.all_reduce(mean)
            mean /= self.world_size
        self._loss_sum.zero_()
        self._loss_steps = 0
        return mean.item()

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Mean token cross-entropy over every full window of the validation shard."""
        self.model.eval()
        totals = torch.zeros(2, device=self.device, dtype=torch.float64)  # loss * windows, windows
        batches = list(eval_batches(self.validation, seq_len=self.training.seq_len,
                                    batch_size=self.eval_batch_size, rank=self.rank,
                                    world_size=self.world_size))
        for batch in batches:
            ids = batch.to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
            totals[0] += loss.double() * len(ids)
            totals[1] += len(ids)
        if self._fsdp:  # every rank gathers each block's shards as often as rank 0 (which has the most windows)
            first = len(range(0, _windows(self.validation, self.training.seq_len), self.world_size))
            for _ in range(math.ceil(first / self.eval_batch_size) - len(batches)):
                self.model(input_ids=batches[0][:1].to(self.device) if batches else
                           torch.zeros(1, self.training.seq_len, dtype=torch.long, device=self.device), use_cache=False)
        if self.world_size > 1:
            dist.all_reduce(totals)
        self.model.train()
        return (totals[0] / totals[1]).item()

    # ---- recording -----------------------------------------------------------------------------

    def _record(self, point: EvalPoint, checkpoint_seconds: float | None = None) -> None:
        """Add a point: callbacks first, then the checkpoint commit, then the curve file."""
        self.curve.append(point)
        for callback in self.callbacks:
            self._stop = bool(callback.on_eval(point)) or self._stop
        if self.world_size > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(self._stop)], device=self.device)
            dist.broadcast(flag, 0)
            self._stop = bool(flag.item())
        path = self._save_checkpoint(checkpoint_seconds) if checkpoint_seconds is not None else None
        if self.rank == 0:
            with open(self.out_dir / CURVE, "a") as f:
                f.write(_curve_line(point))
        if path is not None:
            for callback in self.callbacks:
                callback.on_checkpoint(path, point)

    def _save_checkpoint(self, seconds: float, interim: bool = False) -> Path:
        """Commit a checkpoint; `interim` ones (pre-emption, wall-clock) fall between evaluations: no
        snapshot, and the train-loss sum since the last point (its mean over ranks) travels with them."""
        root = self.out_dir / CHECKPOINTS
        name = f"step-{self.step:09d}"
        loss_sum = self._loss_sum.clone()
        if self.world_size > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= self.world_size
        weights, optimizer = self._full_state(with_optimizer=True)  # every rank: FSDP gathers
        if self.rank == 0:
            with atomic_dir(root / name) as tmp:  # replaces debris of an interrupted earlier attempt
                _save_model(self.model, tmp / "model", weights)
                torch.save({
                    "optimizer": optimizer,
                    "loader": self.loader.state_dict(),
                    "rng": {"cpu": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                    "tokens": self.tokens,
                    "step": self.step,
                    "curve": [asdict(p) for p in self.curve],
                    "seconds": seconds,
                    "start_tokens": self.start_tokens,
                    "loss_sum": loss_sum.item(), "loss_steps": self._loss_steps,
                    "callbacks": {_callback_name(c): c.state_dict() for c in self.callbacks
                                  if hasattr(c, "state_dict")},
                }, tmp / "state.pt")
            # The snapshot before the commit: a run resumed from this checkpoint never makes it again.
            previous = self.curve[-2].tokens if len(self.curve) > 1 else 0
            if not interim and self.snapshot_every and (
                    self.tokens // self.snapshot_every > previous // self.snapshot_every or self.step >= self.n_steps):
                link_tree(root / name / "model", self.out_dir / SNAPSHOTS / f"tokens-{self.tokens:012d}")
            tags = {**self.tagged, **{str(t): name for t in self.keep_tokens
                                      if t <= self.tokens and str(t) not in self.tagged}}
            write_atomic(root / TAGS, json.dumps(tags))
            write_atomic(root / LATEST, name)  # the commit point
            kill_point("pretrain.checkpoint")
            self.tagged = tags
            keep = {name, *tags.values()}
            for old in root.iterdir():
                if old.is_file() and old.name not in (LATEST, TAGS):
                    old.unlink()
                elif old.is_dir() and old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return root / name

    def _load_state(self, checkpoint: Path, optimizer_only: bool = False) -> None:
        """Resume this run from its own checkpoint, or (optimizer_only) continue another run's: its
        optimizer, step, tokens and curve, but this run's loader, RNG and callbacks from scratch."""
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
        if self._fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, _named_optimizer_state(
                self.model, self.optimizer, state["optimizer"]), options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.tokens = state["tokens"]
        self.step = state["step"]
        self.curve = [EvalPoint(**p) for p in state["curve"]]
        if optimizer_only:
            return
        self.start_tokens = state.get("start_tokens", 0)
        tags = checkpoint.parent / TAGS
        self.tagged = json.loads(tags.read_text()) if tags.exists() else {}
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if hasattr(callback, "load_state_dict") and _callback_name(callback) in saved:
                callback.load_state_dict(saved[_callback_name(callback)])
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._seconds_before = state["seconds"]
        # An interim checkpoint's partial train-loss sum (every rank takes the mean over ranks).
        self._loss_sum.fill_(state.get("loss_sum", 0.0))
        self._loss_steps = state.get("loss_steps", 0)

    def _full_state(self, with_optimizer: bool = False) -> tuple[dict | None, dict | None]:
        """The whole model's weights (None: take them from the module) and the optimizer state in the
        plain layout, on rank 0; under FSDP every rank must call this (it gathers the shards)."""
        if not self._fsdp:
            return None, self.optimizer.state_dict() if with_optimizer and self.rank == 0 else None
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # the full state on rank 0 only
        weights = get_model_state_dict(self.model, options=options)
        if not with_optimizer:
            return weights, None
        named = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        return weights, _plain_optimizer_state(self.model, self.optimizer, named) if self.rank == 0 else None

    def _finish(self, seconds: float) -> TrainResult:
        final_dir = self.out_dir / FINAL
        weights, _ = self._full_state()
        if self.rank == 0:
            with atomic_dir(final_dir) as tmp:
                _save_model(self.model, tmp, weights)
        usage = self.loader.usage()
        text = TrainResult(
            curve=list(self.curve), tokens_seen=self.tokens, steps=self.step, final_dir=final_dir,
            tokens_per_source={name: u.tokens for name, u in usage.items()},
            epochs_per_source={name: u.epochs for name, u in usage.items()},
            seconds=seconds, tokens_per_second=(self.tokens - self.start_tokens) / seconds,
            mfu=mfu(self.flops_per_token, (self.tokens - self.start_tokens) / seconds, self.peak, self.world_size),
            start_tokens=self.start_tokens, stopped_early=self.step < self.n_steps,
            tagged={t: str(self.out_dir / CHECKPOINTS / n) for t, n in self.tagged.items()},
            snapshots={str(int(p.name.split("-")[1])): str(p)
                       for p in sorted((self.out_dir / SNAPSHOTS).glob("tokens-*")) if p.is_dir()},
            last_checkpoint=str(_latest_checkpoint(self.out_dir) or ""), resumed_at_tokens=self._resumed_at,
        ).to_json()
        for callback in self.callbacks:
            callback.on_end(TrainResult.from_json(text))
        if self.rank == 0:
            write_atomic(self.out_dir / RESULT, text)  # last: marks the run done
        self._barrier()
        return TrainResult.from_json(text)

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


# ---- helpers -----------------------------------------------------------------------------------

def _device(requested: str, local_rank: int) -> torch.device:
    name = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextmanager
def _process_group(device: torch.device, world_size: int) -> Iterator[None]:
    """Join torchrun's process group for the run unless the caller already did."""
    if world_size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant recomputation of every layer; newer transformers name it so and warn on the old name."""
    options = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def _build_model(spec: ModelSpec, vocab: Vocab, seq_len: int, weights: Path | None) -> torch.nn.Module:
    from transformers import Olmo2ForCausalLM

    config = spec.hf_config(vocab, seq_len)
    if weights is None:
        return Olmo2ForCausalLM(config)
    with _quiet_transformers():
        loaded = Olmo2ForCausalLM.from_pretrained(weights, dtype=torch.float32)
    shape = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    if any(getattr(loaded.config, k) != getattr(config, k) for k in shape):
        raise ValueError(f"the model at {weights} does not have the configured shape "
                         f"({', '.join(f'{k}={getattr(config, k)}' for k in shape)})")
    return loaded


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    embedding = model.get_input_embeddings().weight
    decay = [p for p in model.parameters() if p.ndim >= 2 and p is not embedding]
    rest = [p for p in model.parameters() if p.ndim < 2 or p is embedding]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _save_model(model: torch.nn.Module, folder: Path, weights: dict | None = None) -> None:
    """An HF model folder; `weights`: the full state dict gathered from FSDP shards."""
    with _quiet_transformers():
        model.save_pretrained(folder, state_dict=weights)


def _fully_shard(model: torch.nn.Module, device: torch.device, world_size: int) -> None:
    """FSDP2 over every rank: each decoder block its own unit (gathered one at a time), then the rest."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _param_order(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: the plain state_dict's indices."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _plain_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, named: dict) -> dict:
    """A by-name (distributed) optimizer state in `optimizer.state_dict()`'s by-index layout."""
    index = {n: i for i, n in enumerate(_param_order(model, optimizer))}
    return {"state": {index[n]: v for n, v in named["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]}


def _named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, plain: dict) -> dict:
    """The inverse of `_plain_optimizer_state`, for `set_optimizer_state_dict`."""
    order = _param_order(model, optimizer)
    return {"state": {order[int(i)]: v for i, v in plain["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in plain["param_groups"]]}


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers draws a progress bar per save/load; a training log doesn't want hundreds."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _latest_checkpoint(out_dir: Path) -> Path | None:
    latest = out_dir / CHECKPOINTS / LATEST
    return out_dir / CHECKPOINTS / latest.read_text().strip() if latest.exists() else None


def _callback_name(callback: Callback) -> str:
    return getattr(callback, "name", type(callback).__name__)


def _curve_line(point: EvalPoint) -> str:
    return json.dumps(asdict(point)) + "\n"


def _run_config(*, model: ModelSpec, training: TrainingSpec, vocab: Vocab, sources: list[TokenShard],
                total_tokens: int, validation: TokenShard, seed: int,
                init_from: Path | None, continue_from: Path | None, keep_tokens: Sequence[int],
                snapshot_every: int | None, source_weights: Sequence[float] | None = None) -> dict[str, Any]:
    """What determines the run's result (device and compile do not)."""
    config = {
        "model": model.model_dump(mode="json"),
        "training": training.identity(),
        "vocab": asdict(vocab),
        "sources": [{"name": s.name, "tokens": s.n_tokens} for s in sources],
        "validation": {"name": validation.name, "tokens": validation.n_tokens},
        "total_tokens": total_tokens,
        "seed": seed,
        "init_from": str(Path(init_from).resolve()) if init_from else None,
        "continue_from": str(Path(continue_from).resolve()) if continue_from else None,
        "keep_tokens": sorted(set(keep_tokens)),
        "snapshot_every": snapshot_every,
    }
    if source_weights is not None:  # absent when mixing by token count, so earlier runs' folders still match
        config["source_weights"] = [float(w) for w in source_weights]
    return config


def _check_same_run(out_dir: Path, config: dict[str, Any]) -> None:
    path = out_dir / RUN_CONFIG
    if path.exists() and json.loads(path.read_text()) != config:
        raise ValueError(f"{out_dir} holds a different run (see {path}); use a fresh folder")
