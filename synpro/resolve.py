"""Resolve a parsed spec against the world before any work: plugins, corpus, budget, models, URLs.

Parsing (`synpro.spec`) checks shapes only and imports no plugin; this step imports the registries
(arms, operations, builtin corpora) and looks at the machine. `synpro validate`, `sweep` and
`generate` call it first, so every problem it can know of is an exit 2 naming file, key and line,
and nothing has been written anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from synpro.errors import InputError, Problem
from synpro.spec import EFFECTIVE_METRICS, SYNTHETIC_METRICS, Spec, line_index

CORPUS_KEY = {"builtin": "corpus.name", "jsonl": "corpus.path", "parquet": "corpus.path",
              "textdir": "corpus.path", "hf": "corpus.dataset"}


def resolve(spec: Spec, *, machine: bool = True) -> None:
    """Raise one InputError listing every problem found (each with its key and line).

    `machine=False` checks only what does not depend on this machine (plugin names and options),
    for a spec meant for another one (a GPU cluster's corpus, hub models, database servers)."""
    problems: list[Problem] = []
    hints: list[str] = []
    checks = ((_plugins, _rewards, _resources, _corpus_and_budget, _tokenizer, _generator, _urls, _eval_tasks, _grpo)
              if machine else (_plugins, _rewards, _resources))
    for check in checks:
        try:
            check(spec)
        except InputError as exc:
            problems.extend(exc.problems)
            hints.extend([exc.hint] if exc.hint else [])
    if problems:
        lines = _lines(spec)
        for p in problems:
            if p.line is None and p.key:
                parts = tuple(int(k) if k.isdigit() else k for k in p.key.split("."))
                p.line = next((lines[parts[:n]] for n in range(len(parts), 0, -1) if parts[:n] in lines), None)
        raise InputError(problems, file=spec.source_file, hint="; ".join(hints) or None)


def _lines(spec: Spec) -> dict[tuple, int]:
    try:
        return line_index(Path(spec.source_file).read_text()) if spec.source_file else {}
    except OSError:
        return {}


def _fail(spec: Spec, message: str, key: str, hint: str | None = None) -> InputError:
    return InputError.one(message, file=spec.source_file, key=key, hint=hint)


def _plugins(spec: Spec) -> None:
    from pydantic import ValidationError

    from synpro.arms import ARMS
    from synpro.generation.operations import OPERATIONS
    from synpro.generation.operations.presets import preset_texts

    problems: list[Problem] = []
    operations: dict[str, list[str]] = {}  # per arm whose options are valid: the synthetic sets it trains on
    for name, op in spec.generation.operations.items():
        if op.kind not in OPERATIONS:
            problems.append(Problem(f"unknown operation {op.kind!r}; known: {', '.join(OPERATIONS.names())}",
                                    f"generation.operations.{name}.kind"))
        elif op.preset and preset_texts(op.preset, op.kind) is None:
            problems.append(Problem(f"prompt preset {op.preset!r} has no prompts for a {op.kind} operation",
                                    f"generation.operations.{name}.preset"))
    for i, arm in enumerate(spec.arms):
        if arm.kind not in ARMS:
            problems.append(Problem(f"unknown arm kind {arm.kind!r}; known: {', '.join(ARMS.names())}",
                                    f"arms.{i}.kind"))
            continue
        try:
            options = ARMS.get(arm.kind).Options.model_validate(arm.model_extra or {})
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"])
                problems.append(Problem(e["msg"] if e["type"] != "extra_forbidden" else
                                        f"unknown option for a {arm.kind} arm", f"arms.{i}.{where}"))
            continue
        operations[arm.name] = getattr(options, "operations", [])
        missing = [op for op in operations[arm.name] if op not in spec.generation.operations]
        if missing:
            problems.append(Problem(f"{missing} are not in generation.operations "
                                    f"({', '.join(spec.generation.operations)})", f"arms.{i}.operations"))
    problems += _searched_arm_options(spec)
    has_reference = any(ARMS.get(a.kind).is_reference for a in spec.arms if a.kind in ARMS)
    kinds = {a.name: a.kind for a in spec.arms}
    for key, objective in spec.search.targets():
        if objective.metric in EFFECTIVE_METRICS and not has_reference:
            problems.append(Problem(f"{objective.metric!r} needs an oracle arm to invert", f"{key}.metric"))
        if objective.metric in SYNTHETIC_METRICS and operations.get(objective.arm) == []:
            problems.append(Problem(f"{objective.metric!r} is a metric of an arm's synthetic sets, and arm "
                                    f"{objective.arm!r} ({kinds[objective.arm]}) trains on none", f"{key}.metric"))
    if problems:
        raise InputError(problems, file=spec.source_file)


def _searched_arm_options(spec: Spec) -> list[Problem]:
    """A search over an arm option (`arms.<name>.<option>`): the ends of its range (or every choice) must be
    values the arm accepts, or every trial would fail when it builds its arm."""
    from pydantic import ValidationError

    from synpro.arms import ARMS

    problems: list[Problem] = []
    lines = _lines(spec)
    for path, param in spec.search.params.items():
        parts = path.split(".")
        arm = next((a for i, a in enumerate(spec.arms) if len(parts) == 3 and parts[0] == "arms"
                    and parts[1] in (a.name, str(i))), None)
        if arm is None or arm.kind not in ARMS:
            continue
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for value in dict.fromkeys(values):
            try:
                ARMS.get(arm.kind).Options.model_validate({**(arm.model_extra or {}), parts[2]: value})
            except ValidationError as err:
                reasons = "; ".join(e["msg"] for e in err.errors())
                problems.append(Problem(f"{value!r} is not a valid {parts[2]!r} for a {arm.kind} arm: {reasons}",
                                        f"search.params.{path}", lines.get(("search", "params", path))))
    return problems


def _resources(spec: Spec) -> None:
    """`resources` names stage kinds (or `default`), and only stages that run under torchrun get ranks."""
    from synpro.stages import STAGES

    problems = []
    for kind, entry in spec.resources.items():
        if kind != "default" and kind not in STAGES:
            problems.append(Problem(f"unknown stage kind {kind!r}; known: default, {', '.join(STAGES.names())}",
                                    f"resources.{kind}"))
        elif kind != "default" and (entry.processes or 1) > 1 and not STAGES.get(kind).distributed:
            problems.append(Problem(f"{kind} stages run in one process; only "
                                    f"{', '.join(n for n in STAGES.names() if STAGES.get(n).distributed)} "
                                    "take processes > 1", f"resources.{kind}.processes"))
    processes = spec.resources_for("pretrain")["processes"]
    micro = spec.training.micro_batch_size or spec.training.batch_size // processes
    if processes > 1 and (spec.training.batch_size % processes or spec.training.batch_size % (micro * processes)):
        problems.append(Problem(f"training.batch_size {spec.training.batch_size} does not split into {processes} ranks of "
                                f"whole micro-batches ({micro})", "resources.pretrain.processes"))
    default = spec.resources.get("default")
    if default is not None and (default.processes or 1) > 1:
        problems.append(Problem("processes > 1 belongs to a stage kind that supports it (e.g. resources.pretrain), "
                                "not to every stage", "resources.default.processes"))
    if problems:
        raise InputError(problems, file=spec.source_file)


def _rewards(spec: Spec) -> None:
    from synpro.rewards.scoring import check_reward_spec

    check_reward_spec(spec)


def _corpus_and_budget(spec: Spec) -> None:
    """The corpus exists and reads, and it can hold the pools: U + V (+ the oracle's T − U).

    Token counts need the tokenizer, which is trained later; a byte-level BPE never makes more
    tokens than UTF-8 bytes (plus one EOS a document), so that bound proves a budget impossible
    without tokenizing. Only the corpus's first documents are read (`synpro.data.corpus.survey`):
    beyond them the bound is extrapolated from file sizes or dataset metadata, never downloaded."""
    from synpro.arms import ARMS
    from synpro.data.corpus import survey

    unique, total = spec.budget.resolve(spec.model)
    oracle = any(ARMS.get(a.kind).is_reference for a in spec.arms if a.kind in ARMS)
    need = unique + spec.budget.validation_tokens + (total - unique if oracle else 0)
    found = survey(spec, need)  # raises InputError for a missing, unreadable or empty corpus
    if found.bound is None or found.bound >= need:
        return
    key = ("budget.total_tokens" if spec.budget.total_tokens is not None else "budget.epochs") if oracle else \
        ("budget.unique_tokens" if spec.budget.unique_tokens is not None else "budget.unique_fraction")
    parts = f"U={unique:,} + V={spec.budget.validation_tokens:,}" + (f" + T-U={total - unique:,} for the oracle"
                                                                      if oracle else "")
    held = (f"its {found.docs:,} documents hold at most {found.bound:,} tokens" if found.complete else
            f"it holds at most about {found.bound:,} tokens ({found.how})")
    raise _fail(spec, f"the corpus is too small for the budget: {held} (UTF-8 bytes + one EOS each; about "
                      f"{found.bound // 4:,} at ~4 bytes a token), but the pools need {need:,} ({parts})", key,
                hint="lower budget.unique_tokens / budget.total_tokens"
                     + (" or drop the oracle arm" if oracle else "") + ", or use a bigger corpus")


def _tokenizer(spec: Spec) -> None:
    if spec.tokenizer.kind != "pretrained":
        return
    _hub_or_folder(spec, spec.tokenizer.name or "", "tokenizer.name", "tokenizer")


def _generator(spec: Spec) -> None:
    from synpro.arms import ARMS
    from synpro.generation.generator import model_identity

    from pydantic import ValidationError

    def operations(arm) -> list[str]:
        try:
            return list(getattr(ARMS.get(arm.kind).Options.model_validate(arm.model_extra or {}), "operations", []))
        except ValidationError:  # reported by _plugins
            return []

    if any(operations(a) for a in spec.arms if a.kind in ARMS):
        model_identity(spec)  # InputError naming generation.generator.model when it cannot be found offline


def _grpo(spec: Spec) -> None:
    """The generators SynPro arms train: base model offline, rewards that fit each operation, peft for LoRA."""
    from synpro.grpo.checks import check_grpo

    operations = sorted({op for arm in spec.arms if arm.kind == "synpro"
                         for op in (arm.model_extra or {}).get("operations", ["rephrase", "reformat"])})
    if operations:
        check_grpo(spec, operations)


def _eval_tasks(spec: Spec) -> None:
    from synpro.evaluation.tasks import check_tasks

    check_tasks(spec)


def _hub_or_folder(spec: Spec, name: str, key: str, what: str) -> None:
    local = Path(name).expanduser()
    if not local.is_absolute() and spec.source_file:
        local = Path(spec.source_file).parent / local
    if local.is_dir():
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - bad id, not cached, offline: all the user's to fix
        raise _fail(spec, f"cannot find {what} {name!r}: no such folder, and not in the Hugging Face cache "
                          f"({type(exc).__name__})", key,
                    hint="use a local folder or a Hub id downloaded beforehand (this machine may be offline)") from None


def _urls(spec: Spec) -> None:
    checks: list[tuple[str, str | None, Callable[[str], None]]] = [
        ("store.url", spec.store.url, _sql_url), ("store.optuna_url", spec.store.optuna_url, _sql_url),
        ("tracking.mlflow_uri", spec.tracking.mlflow_uri if spec.tracking.enabled else None, _tracking_uri)]
    problems = []
    for key, value, check in checks:
        if value is None:
            continue
        try:
            check(value)
        except ValueError as exc:
            problems.append(Problem(str(exc), key))
    if problems:
        raise InputError(problems, file=spec.source_file,
                         hint="write sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/db")


def _sql_url(value: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
        dialect = url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ValueError(f"not a database URL SQLAlchemy can use: {type(exc).__name__}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(f"the {url.drivername!r} driver is not installed ({exc.name}): "
                         f"pip install 'synpro[postgres]' for PostgreSQL") from None


def _tracking_uri(value: str) -> None:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme in ("", "file", "http", "https", "databricks"):
        return
    _sql_url(value)
