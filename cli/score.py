"""Commands of the scoring half: run the influence probe, score (source, output) pairs with the rewards,
and serve influence scores over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli.app import SpecArg, WorkdirOpt, app, guarded, load_spec_with, out
from synpro.errors import InputError

CheckpointOpt = typer.Option(None, "--checkpoint", "-c", help="θ: an HF model folder (e.g. an arm's final/).")
ArmOpt = typer.Option(None, "--arm", help="Take θ from this arm's trained final model (after `synpro sweep`).")
TokenizerOpt = typer.Option(None, "--tokenizer", help="Tokenizer folder (default: the data stage's).")


def _spec(spec_path: Path, workdir: Optional[Path]):
    """The spec, its workdir (where θ, the tokenizer and θ′ are looked up) overridden by --workdir; no corpus
    read, no generator run."""
    return load_spec_with(spec_path, {"experiment.workdir": str(workdir) if workdir else None}, machine=False)


def _theta(spec, checkpoint: Optional[Path], arm: Optional[str]) -> Path | None:
    if checkpoint and arm:
        raise InputError.one("give --checkpoint or --arm, not both", key="--arm")
    if arm is None:
        return checkpoint
    from synpro.plan import plan_trial

    from synpro.training.trainer import FINAL

    plan = plan_trial(spec)
    if arm not in [a.name for a in plan.arms]:
        raise InputError.one(f"no arm {arm!r} in the spec (arms: {', '.join(a.name for a in plan.arms)})",
                             file=spec.source_file, key="--arm")
    return plan.folder(plan.arm(arm).stage) / FINAL


def _tokenizer(spec, tokenizer: Optional[Path]) -> Path:
    if tokenizer is not None:
        return tokenizer
    from synpro.data.prepare import TOKENIZER_DIR
    from synpro.plan import plan_trial

    plan = plan_trial(spec)
    folder = plan.folder(next(s for s in plan.graph if s.kind == "pools")) / TOKENIZER_DIR
    if not folder.exists():
        raise InputError.one(f"no tokenizer at {folder} (the data stage has not run)", key="--tokenizer",
                             hint="pass --tokenizer DIR, or run `synpro sweep SPEC` first")
    return folder


def _probe(spec, theta: Path, tokenizer: Path, probe_out: Optional[Path] = None):
    from synpro.influence.probe import probe_from_spec

    with out.status("probe θ → θ′ ..."):
        return probe_from_spec(spec, theta, tokenizer, probe_out)


def _source(spec, theta: Path, tokenizer: Path):
    from synpro.influence.service import source_for

    return source_for(spec, theta, _probe(spec, theta, tokenizer).out_dir, tokenizer)


@app.command()
@guarded
def probe(spec_path: Path = SpecArg, checkpoint: Optional[Path] = CheckpointOpt, arm: Optional[str] = ArmOpt,
          tokenizer: Optional[Path] = TokenizerOpt,
          probe_out: Optional[Path] = typer.Option(None, "--out", help="Where θ′ goes (default: the workdir's stages/)."),
          workdir: Optional[Path] = WorkdirOpt) -> None:
    """Fine-tune a copy of θ on the reference set (θ′) or reuse a finished probe; print where θ′ lives.

    Example:  synpro probe experiments/quickstart.yaml --arm repetition
    """
    spec = _spec(spec_path, workdir)
    theta = _theta(spec, checkpoint, arm)
    if theta is None:
        raise InputError.one("say which checkpoint to probe", key="--checkpoint", hint="pass --checkpoint DIR or --arm NAME")
    result = _probe(spec, theta, _tokenizer(spec, tokenizer), probe_out)
    out.print(f"θ′: {escape(str(result.out_dir))}{' (reused)' if result.reused else ''}\n"
              f"reference loss {result.loss_before:.4f} → {result.loss_after:.4f} "
              f"({spec.probe.steps} steps on {result.train_examples} examples, {result.eval_examples} held out)")


@app.command()
@guarded
def score(spec_path: Path = SpecArg,
          input_path: Path = typer.Option(..., "--input", "-i", help="JSONL: one {\"source\", \"output\"} per line; "
                                          "output is the generator's full answer, heading included."),
          operation: str = typer.Option("rephrase", "--operation", "-o", help="An operation of the spec."),
          rewards: Optional[str] = typer.Option(None, "--rewards", "-r", help="Comma-separated subset of the "
                                                "operation's rewards (default: all with a weight)."),
          fmt: str = typer.Option("table", "--format", "-f", help="table or json (one object per line)."),
          checkpoint: Optional[Path] = CheckpointOpt, arm: Optional[str] = ArmOpt, tokenizer: Optional[Path] = TokenizerOpt,
          workdir: Optional[Path] = WorkdirOpt) -> None:
    """Score (source, output) pairs with an operation's rewards and their weighted total.

    Example:  synpro score experiments/quickstart.yaml --input pairs.jsonl --arm repetition --format json
    """
    if fmt not in ("table", "json"):
        raise InputError.one(f"unknown format {fmt!r}; choose table or json", key="--format")
    spec = _spec(spec_path, workdir)
    from synpro.rewards.scoring import build_rewards, score_pairs, weights_for

    pairs = _read_pairs(input_path)
    names = [n.strip() for n in rewards.split(",") if n.strip()] if rewards else None
    wants_influence = "influence" in (names or weights_for(spec, operation))
    theta = _theta(spec, checkpoint, arm)
    source = None
    if wants_influence and spec.influence.url:
        from synpro.influence.service import source_for

        source = source_for(spec)
    elif wants_influence and theta is not None:
        source = _source(spec, theta, _tokenizer(spec, tokenizer))
    funcs, weights = build_rewards(spec, operation, names=names, influence=source)
    rows = score_pairs([p["source"] for p in pairs], [p["output"] for p in pairs], funcs, weights)
    unparseable = {f.__name__: f.failures for f in funcs if f.failures}
    if unparseable:  # those scores are 0 for want of a verdict, not by one
        typer.echo("unparseable judge answers (scored 0): "
                   + ", ".join(f"{name} {n}" for name, n in unparseable.items()), err=True)
    if fmt == "json":
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title=f"{input_path}: {operation} rewards", title_justify="left")
    table.add_column("#", justify="right")
    for func, weight in zip(funcs, weights):
        table.add_column(f"{func.__name__} ×{weight:g}", justify="right")
    table.add_column("total", justify="right")
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), *(f"{v:.3f}" for v in row.values()))
    out.print(table)


@app.command("serve-influence")
@guarded
def serve_influence(spec_path: Path = SpecArg, checkpoint: Optional[Path] = CheckpointOpt, arm: Optional[str] = ArmOpt,
                    tokenizer: Optional[Path] = TokenizerOpt,
                    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default influence.host: 127.0.0.1)."),
                    port: Optional[int] = typer.Option(None, "--port", help="Port (default influence.port)."),
                    workdir: Optional[Path] = WorkdirOpt) -> None:
    """Serve I(y) = L(y; θ) − L(y; θ′) over HTTP for GRPO workers (POST /influence {"texts": [...]}).

    Example:  synpro serve-influence experiments/quickstart.yaml --arm repetition --port 8642
    """
    spec = _spec(spec_path, workdir)
    theta = _theta(spec, checkpoint, arm)
    if theta is None:
        raise InputError.one("say which checkpoint θ to serve", key="--checkpoint", hint="pass --checkpoint DIR or --arm NAME")
    scorer = _source(spec, theta, _tokenizer(spec, tokenizer)).open()
    from synpro.influence.service import make_server

    server = make_server(scorer, host or spec.influence.host, port or spec.influence.port)
    out.print(f"serving influence (key {scorer.key}) at http://{server.server_address[0]}:{server.server_address[1]}",
              highlight=False)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _read_pairs(path: Path) -> list[dict[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError.one(f"cannot read the input: {exc.strerror}", file=str(path)) from None
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError.one(f"not JSON: {exc.msg}", file=str(path), line=n) from None
        missing = [k for k in ("source", "output") if not isinstance(row, dict) or not isinstance(row.get(k), str)]
        if missing:
            raise InputError.one(f"no text field {', '.join(missing)}", file=str(path), line=n,
                                 hint='each line is {"source": "...", "output": "..."}')
        pairs.append(row)
    if not pairs:
        raise InputError.one("no pairs in the input", file=str(path))
    return pairs
