"""`pretrain`: train a model on a mixture of upstream shards to a total token budget.

The mixture is a list of input names: `organic` (the pools' organic shard), `extra`, or a
`synthesize` input (its token shard). With a `parent` input the run continues that pretraining
run's checkpoint at `continue_at` tokens (model, optimizer, step and token count) on this mixture,
so the two read as one learning curve. Observing callbacks (the store and MLflow sinks) travel in
the context and never enter the key.

Sources are mixed by token count unless `synthetic_share` is set (and the mixture holds a
`synthesize` input): then that share of the windows trained comes from the synthetic sets, split
among them by their usable tokens, and the rest from the other sources (organic) by theirs. The
share enters the config (and so the key) only when it applies; the measured share is a metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from synpro.stages.base import STAGES, Stage, StageContext

if TYPE_CHECKING:
    from synpro.data.prepare import PreparedData
    from synpro.spec import Spec

ORGANIC = "organic"


@STAGES.register("pretrain")
class PretrainStage(Stage):
    kind = "pretrain"
    version = 1
    distributed = True  # the trainer splits the batch over torchrun's ranks; rank 0 writes

    def __init__(self, spec: "Spec", total_tokens: int, pools: Stage, sources: Mapping[str, Stage], *,
                 label: str = "", keep_tokens: tuple[int, ...] = (), parent: Stage | None = None,
                 continue_at: int | str | None = None, stop: Mapping | None = None,
                 synthetic_share: float | None = None):
        inputs: dict[str, Stage] = {"pools": pools, **sources}
        if parent is not None:
            inputs["parent"] = parent
        config = {
            "model": spec.model.model_dump(mode="json"),
            "training": spec.training.identity(),
            "total_tokens": total_tokens, "seed": spec.experiment.seed,
            "mixture": [ORGANIC, *sources], "keep_tokens": sorted(keep_tokens), "continue_at": continue_at,
            # Where the run may end before total_tokens: {"plateau": {window, min_improvement, min_tokens}}
            # or {"at_tokens": N}; a continued run resumes from the parent's end ("end") or a tagged count.
            "stop": dict(stop) if stop else None,
            # Model snapshots for downstream evaluation, at its (coarser) interval; none without tasks.
            "snapshot_every": (spec.eval.interval_tokens or spec.training.eval_interval_tokens) if spec.eval.tasks
            else None,
        }
        if synthetic_share is not None and _synthetic(sources):  # absent otherwise: keys as before the knob
            config["synthetic_share"] = synthetic_share
        super().__init__(config, inputs, label=label)
        self.spec = spec

    def shards(self, inputs: Mapping[str, object]) -> list:
        pools: PreparedData = inputs["pools"]  # type: ignore[assignment]
        out = []
        for name in self.config["mixture"]:
            value = pools.organic if name == ORGANIC else inputs[name]
            out.append(getattr(value, "shard", value))  # a synthetic set carries its shard
        return out

    def weights(self, shards: list) -> list[float] | None:
        """Each source's share of the windows trained (None: by token count); see the module docstring."""
        share = self.config.get("synthetic_share")
        if share is None:
            return None
        seq_len = self.spec.training.seq_len
        names = self.config["mixture"]
        synthetic = set(_synthetic({n: self.inputs[n] for n in names if n != ORGANIC}))
        windows = {n: shard.n_tokens // seq_len for n, shard in zip(names, shards)}
        groups = {True: sum(windows[n] for n in synthetic), False: sum(windows[n] for n in names if n not in synthetic)}
        if not groups[True] or not groups[False]:
            return None  # one side holds no full window: only the other can be read
        return [(share if n in synthetic else 1 - share) * windows[n] / groups[n in synthetic] for n in names]

    def run(self, ctx: StageContext) -> dict:
        result = self._train(ctx.folder, ctx.inputs, ctx.callbacks, ctx.progress)
        synthetic = _synthetic({n: self.inputs[n] for n in self.config["mixture"] if n != ORGANIC})
        trained = sum(result.tokens_per_source.values())
        shards = dict(zip(self.config["mixture"], self.shards(ctx.inputs)))
        seen = sum(result.tokens_per_source.get(shards[n].name, 0) for n in synthetic)
        return {"final_val_loss": result.final_val_loss, "tokens_seen": result.tokens_seen,
                "epochs_per_source": result.epochs_per_source, "stopped_early": result.stopped_early,
                "resumed_at_tokens": result.resumed_at_tokens,
                "tokens_per_second": result.tokens_per_second, "mfu": result.mfu,
                # of the tokens this run trained (a continued run: since its parent), from the synthetic sets
                "synthetic_token_share": seen / trained if trained else 0.0}

    def observe(self, folder: Path, callbacks: list, seen: dict) -> None:
        """New curve points (curve.jsonl) to the observers' `on_eval`, as the trainer would call it."""
        if not callbacks:
            return
        import json

        from synpro.training.result import EvalPoint

        try:
            lines = (folder / "curve.jsonl").read_text().splitlines()
        except OSError:
            return
        done = seen.setdefault("tokens", set())
        for line in lines:
            try:
                point = EvalPoint(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line being written
            if point.tokens not in done:
                done.add(point.tokens)
                for callback in callbacks:
                    callback.on_eval(point)

    def load(self, folder: Path, inputs):
        from synpro.training import TrainResult
        from synpro.training.trainer import RESULT

        return TrainResult.from_json((folder / RESULT).read_text())

    def _train(self, folder: Path, inputs: Mapping[str, object], callbacks: list, progress: bool):
        from synpro.training import train

        pools: PreparedData = inputs["pools"]  # type: ignore[assignment]
        parent = inputs.get("parent")
        continue_from = None
        if parent is not None:
            at = self.config["continue_at"]
            continue_from = Path(parent.last_checkpoint if at == "end" else parent.tagged[str(at)])  # type: ignore[attr-defined]
        stops, keep = _stops(self.config["stop"])
        sources = self.shards(inputs)
        return train(model=self.spec.model, training=self.spec.training, vocab=pools.vocab,
                     sources=sources, source_weights=self.weights(sources), total_tokens=self.config["total_tokens"],
                     validation=pools.validation, out_dir=folder, seed=self.config["seed"],
                     callbacks=[*stops, *callbacks], continue_from=continue_from,
                     keep_tokens=sorted({*self.config["keep_tokens"], *keep}),
                     snapshot_every=self.config["snapshot_every"], progress=progress)


def _synthetic(sources: Mapping[str, Stage]) -> list[str]:
    """The names of the sources that are synthetic sets."""
    return [name for name, stage in sources.items() if stage.kind == "synthesize"]


def _stops(stop: Mapping | None) -> tuple[list, list[int]]:
    """The stop callbacks a config asks for, and the token counts the trainer must evaluate at."""
    from synpro.training.stopping import Plateau, StopAt

    if not stop:
        return [], []
    if "at_tokens" in stop:
        return [StopAt(stop["at_tokens"])], [stop["at_tokens"]]
    p = stop["plateau"]
    return [Plateau(p["window"], p["min_improvement"], p.get("min_tokens", 0))], []
