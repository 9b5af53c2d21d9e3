"""Per-recipe fits from stored curves (with intervals and identification), fits as idempotent
store rows, and migrations 0002 and 0003."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from store import Store
from store.schema import Base
from store.store import alembic_config
from synpro.errors import InputError
from synpro.fits import MIN_MODEL_SIZES, NEGLIGIBLE_A, RecipeLaw, fit_study, save_fits, token_worth
from synpro.scaling import MUENNIGHOFF_C4, DataConstrainedLaw
from synpro.spec import parse_spec

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
STUDY = "recipes"
BOOTSTRAP = 6  # the spec's refits per fit: few, so the tests stay fast
# A grid over the model width: with all three widths the base constants are identifiable.
SPEC = f"""experiment: {{name: {STUDY}}}
budget: {{unique_tokens: 40000, total_tokens: 240000}}
search:
  sampler: grid
  objective: {{arm: repetition, metric: final_val_loss, direction: minimize}}
  params:
    model.d_model: {{type: categorical, choices: [64, 128, 256]}}
analysis: {{bootstrap: {BOOTSTRAP}}}
"""
TRUE_R_D_STAR = {"repetition": 15.388, "synthetic": 60.0}
TOTAL, UNIQUE = 2e9, 5e7  # 40 epochs of U for the repeated arms
EVAL_TOKENS = np.geomspace(2e7, TOTAL, 12).round()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'results.db'}") as opened:
        yield opened


def populate(store: Store, widths: tuple[int, ...] = (64,), noise: float = 0.001, seed: int = 0,
             arms: tuple[str, ...] = ("oracle", "repetition", "synthetic"),
             r_d_star: dict[str, float] = TRUE_R_D_STAR, truth: DataConstrainedLaw = MUENNIGHOFF_C4,
             unique: float = UNIQUE) -> dict[str, int]:
    """A study whose curves follow `truth` (Muennighoff's C4 law), each repeated arm with its own R_D*
    and `unique` tokens (the oracle's are all new).

    Models stay below the compute-optimal size for the data they have seen, so the law's
    excess-parameter discount is inactive and the per-recipe law describes the points exactly.
    Returns arm -> one arm id (of the last trial).
    """
    rng = np.random.default_rng(seed)
    spec = parse_spec(SPEC)
    study_id = store.upsert_study(STUDY, SPEC, spec.search.objective.model_dump())
    ids = {}
    for number, width in enumerate(widths):
        N = spec.with_params({"model.d_model": width}).model.non_embedding_params()
        trial = store.upsert_trial(study_id, f"width-{width}", {"model.d_model": width}, optuna_number=number)
        for arm in arms:
            arm_unique = TOTAL if arm == "oracle" else unique
            law = dataclasses.replace(truth, R_D_star=r_d_star.get(arm, 1.0))
            assert np.all(N <= MUENNIGHOFF_C4.base().optimal_params(np.minimum(arm_unique, EVAL_TOKENS)))
            losses = law.predict(N, EVAL_TOKENS, arm_unique) * np.exp(rng.normal(0.0, noise, EVAL_TOKENS.shape))
            ids[arm] = store.upsert_arm(trial, arm, arm, "cfg", int(arm_unique), int(TOTAL))
            store.add_evaluations(ids[arm], [{"tokens": int(t), "step": i, "val_loss": float(v)}
                                             for i, (t, v) in enumerate(zip(EVAL_TOKENS, losses))])
            store.set_arm_result(ids[arm], final_val_loss=float(losses[-1]), tokens_seen=int(TOTAL),
                                 effective_tokens=None, effective_tokens_extrapolated=None,
                                 multiplier_vs_repetition=None)
        store.finish_trial(trial, "finished", objective_value=float(losses[-1]))
    return ids


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


# ---- the recipe -----------------------------------------------------------------------------------


def test_one_model_size_freezes_what_it_cannot_identify_and_recovers_each_arms_r_d_star(store: Store) -> None:
    populate(store)
    fits = fit_study(store, STUDY)
    assert fits.base is not None and fits.base.points.arm == "oracle" and fits.skipped == {}
    base = fits.base.result
    assert base.settings["frozen"] == {"alpha": MUENNIGHOFF_C4.alpha, "A": NEGLIGIBLE_A}
    assert f"needs {MIN_MODEL_SIZES}" in base.settings["frozen_why"]["A"]
    assert "folded into E" in base.settings["frozen_why"]["A"]
    # E absorbs the parameter term of the one size trained; the data term is recovered.
    assert abs(base.constants["beta"] / MUENNIGHOFF_C4.beta - 1) < 0.05
    by_arm = {fit.points.arm: fit for fit in fits.arms}
    assert set(by_arm) == set(TRUE_R_D_STAR)
    for arm, truth in TRUE_R_D_STAR.items():
        fit = by_arm[arm]
        assert fit.result.law == RecipeLaw.name
        assert abs(fit.r_d_star / truth - 1) < 0.15, (arm, fit.r_d_star)
        assert fit.result.settings["frozen"] == {k: base.constants[k] for k in ("A", "B", "E", "alpha", "beta")}
        assert fit.result.settings["frozen_why"]["B"] == "fitted on the unique-data points of arm 'oracle'"
        summary = fit.summary()
        assert summary["epochs"] == 40.0 and summary["ceiling"] == 1 + fit.r_d_star
        true_worth = token_worth(40.0, truth)["unique_value"]
        assert abs(summary["unique_value"] / true_worth - 1) < 0.05
        assert summary["token_value"] == pytest.approx(summary["unique_value"] / 40.0)
    assert by_arm["synthetic"].r_d_star > 2 * by_arm["repetition"].r_d_star
    # By default every fit is bootstrapped as the spec says, and 40 epochs identify each R_D*.
    assert fits.n_boot == BOOTSTRAP
    for fit in fits.all():
        assert fit.result.interval["n"] == BOOTSTRAP and all(lo < hi for lo, hi in fit.result.ci.values())
        assert set(fit.result.ci) | set(fit.result.no_spread) == set(fit.result.identified)
        assert all(flag.identified for flag in fit.result.identified.values()), fit.result.identified
        assert fit.result.points_per_free_constant == (12 / 3 if fit is fits.base else 12)
    summary = by_arm["repetition"].summary()
    lo, hi = summary["unique_value_ci"]
    assert lo < summary["unique_value"] < hi and summary["identified"]["R_D_star"]["identified"]


def test_r_d_star_of_runs_at_two_epochs_or_fewer_is_flagged(store: Store) -> None:
    # R_D* = 60 barely changes D' below 2 epochs: the fit cannot tell it from much larger values.
    populate(store, arms=("oracle", "repetition"), r_d_star={"repetition": 60.0}, unique=TOTAL / 2)
    [fit] = fit_study(store, STUDY).arms
    assert fit.points.epochs == 2.0
    flag = fit.summary()["identified"]["R_D_star"]
    assert flag["identified"] is False and "do not bound it from above" in flag["reason"]
    assert all(lo < hi for lo, hi in fit.result.ci.values())


def test_a_constant_the_points_cannot_pin_down_is_reported_as_on_a_bound(store: Store) -> None:
    # No irreducible loss at all: the best E is below anything the fitter searches.
    populate(store, widths=(64, 128, 256), noise=0.0, arms=("oracle", "repetition"),
             truth=dataclasses.replace(MUENNIGHOFF_C4, E=1e-12))
    fits = fit_study(store, STUDY, n_boot=0)
    flag = fits.base.summary()["identified"]["E"]
    assert flag["identified"] is False and "on the search bound" in flag["reason"]
    assert fits.base.result.ci is None and fits.base.summary()["ci"] is None


def test_three_model_sizes_fit_every_base_constant(store: Store) -> None:
    populate(store, widths=(64, 128, 256), noise=0.0)
    fits = fit_study(store, STUDY, arm="repetition", n_boot=8)
    base = fits.base.result
    assert base.settings["frozen"] == {} and base.settings["frozen_why"] == {}
    for name in ("E", "alpha", "beta"):
        assert abs(base.constants[name] / getattr(MUENNIGHOFF_C4, name) - 1) < 0.02, name
    [fit] = fits.arms
    assert abs(fit.r_d_star / TRUE_R_D_STAR["repetition"] - 1) < 0.02
    lo, hi = fit.result.ci["R_D_star"]
    assert lo <= fit.r_d_star <= hi and fit.result.identified["R_D_star"].identified
    assert set(base.ci) == set(base.identified) == {"A", "B", "E", "alpha", "beta"}


def test_fit_problems_are_input_errors_that_say_what_to_do(store: Store) -> None:
    populate(store, arms=("repetition",))
    with pytest.raises(InputError, match="no reference") as info:
        fit_study(store, STUDY)
    assert "--freeze" in str(info.value)
    # Given every base constant, no oracle is needed.
    given = MUENNIGHOFF_C4.base().constants()
    [fit] = fit_study(store, STUDY, frozen=given).arms
    assert fit.result.settings["frozen_why"] == {k: "given" for k in given}
    assert abs(fit.r_d_star / TRUE_R_D_STAR["repetition"] - 1) < 0.15
    with pytest.raises(InputError, match="R_N_star"):
        fit_study(store, STUDY, frozen={"R_N_star": 5.0})
    with pytest.raises(InputError, match="no finished arm named 'oracle'"):
        fit_study(store, STUDY, arm="oracle")
    with pytest.raises(InputError, match="no study named"):
        fit_study(store, "nope")


def test_an_arm_without_repetition_is_skipped_and_refused_when_asked_for(store: Store) -> None:
    populate(store, arms=("oracle", "repetition"))
    with store.engine.connect() as conn:
        trial = conn.execute(sa.text("SELECT id FROM trials")).scalar_one()
    fresh = store.upsert_arm(trial, "fresh", "synthetic", "cfg", int(TOTAL), int(TOTAL))
    store.add_evaluations(fresh, [{"tokens": int(t), "step": i, "val_loss": 5.0 - i / 10}
                                  for i, t in enumerate(EVAL_TOKENS)])
    store.set_arm_result(fresh, final_val_loss=4.0, tokens_seen=int(TOTAL), effective_tokens=None,
                         effective_tokens_extrapolated=None, multiplier_vs_repetition=None)
    fits = fit_study(store, STUDY)
    assert [f.points.arm for f in fits.arms] == ["repetition"]
    assert "no repeated data" in fits.skipped["fresh"]
    with pytest.raises(InputError, match="'fresh': no repeated data"):
        fit_study(store, STUDY, arm="fresh")


# ---- fits in the store ----------------------------------------------------------------------------


def test_fits_are_idempotent_rows_linked_to_their_trials(url: str) -> None:
    with Store(url) as store:
        populate(store, widths=(64, 128))
        fits = fit_study(store, STUDY)
        ids = save_fits(store, STUDY, fits)
        assert save_fits(store, STUDY, fit_study(store, STUDY)) == ids  # same points, same options: same rows
        assert (count(store, "fits"), count(store, "fit_trials")) == (3, 6)
        stored = store.fits(STUDY)
        assert [f["arm"] for f in stored] == ["oracle", "repetition", "synthetic"]
        repetition = store.fits(STUDY, arm="repetition")[0]
        assert repetition["trials"] == [0, 1] and repetition["law"] == "recipe"
        assert repetition["constants"]["R_D_star"] == pytest.approx(fits.arms[0].r_d_star)
        # Estimate, interval and identification are stored together.
        lo, hi = repetition["ci"]["R_D_star"]
        assert lo < hi and repetition["interval"] == fits.arms[0].result.interval
        assert repetition["identified"] == {"R_D_star": fits.arms[0].result.identified["R_D_star"].to_dict()}
        assert repetition["residual_spread"] == pytest.approx(fits.arms[0].result.residual_spread)
        assert repetition["points_per_free_constant"] == 24
        assert len(repetition["residuals"]) == repetition["n_points"] == 24
        assert repetition["settings"]["frozen_why"]["alpha"].startswith("'oracle' was trained at 2 model size(s)")
        assert repetition["created_at"].endswith("+00:00")
        # Other options are another fit; the comparison shows the latest one per arm.
        plain = save_fits(store, STUDY, fit_study(store, STUDY, arm="repetition", n_boot=0))
        assert not set(plain) & set(ids) and count(store, "fits") == 5
        assert store.fits(STUDY, arm="repetition")[-1]["ci"] is None  # no bootstrap: NULL, not the estimate twice
        latest = {row["arm"]: row for row in store.compare(STUDY)}
        assert latest["repetition"]["fit_id"] == plain[1] and latest["synthetic"]["fit_id"] == ids[2]
        assert latest["repetition"]["r_d_star_ci"] is None
        assert latest["repetition"]["r_d_star_identified"] == store.fits(STUDY)[-1]["identified"]["R_D_star"]
        low, high = latest["synthetic"]["r_d_star_ci"]
        assert low < high and latest["synthetic"]["r_d_star_identified"] == stored[2]["identified"]["R_D_star"]
        assert latest["oracle"]["r_d_star"] is None  # its fit (the base) has no R_D*
        with pytest.raises(ValueError, match="zero-width"):
            store.add_fit(store.study(STUDY)["id"], arm="x", law="recipe", constants={"R_D_star": 2.0},
                          ci={"R_D_star": (2.0, 2.0)}, interval=None, identified=None, residual_spread=None,
                          points_per_free_constant=None, loss=0.0, n_points=3, inputs_hash="zero", settings={},
                          residuals=[], trial_ids=[])
        # Deleting the study deletes its fits and their links.
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM studies"))
        assert (count(store, "fits"), count(store, "fit_trials")) == (0, 0)


def migrate(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def old_store(url: str, revision: str) -> sa.Engine:
    """A store at an older revision holding one study (id 1), as a user's store before an upgrade."""
    engine = sa.create_engine(url)
    migrate(engine, revision)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO studies (id, name, spec_yaml, objective, created_at, updated_at) "
                             "VALUES (1, :name, :spec, '{}', :now, :now)"),
                     {"name": STUDY, "spec": SPEC, "now": "2026-01-01 00:00:00+00:00"})
    return engine


def test_migration_0003_drops_zero_width_intervals_of_older_fits(url: str) -> None:
    engine = old_store(url, "0002")
    with engine.begin() as conn:
        for n, ci in enumerate(['{"R_D_star": [15.0, 15.0]}', '{"E": [1.8, 1.8], "B": [400.0, 500.0]}']):
            conn.execute(sa.text(
                "INSERT INTO fits (study_id, arm, law, constants, ci, loss, n_points, inputs_hash, settings, "
                "residuals, created_at) VALUES (1, :arm, 'recipe', '{\"R_D_star\": 15.0, \"E\": 1.8, "
                "\"B\": 450.0}', :ci, 0.0, 4, :hash, '{}', '[]', :now)"),
                {"arm": f"arm{n}", "ci": ci, "hash": f"h{n}", "now": f"2026-01-0{n + 1} 00:00:00+00:00"})
    engine.dispose()
    with Store(url) as store:
        with store.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
        old, mixed = store.fits(STUDY)
        assert old["ci"] is None and mixed["ci"] == {"B": (400.0, 500.0)}  # the estimate twice is gone
        assert old["identified"] is None and old["interval"] is None  # not assessed: shown as such
        assert schema_diff(store.engine) == []
    migrate(engine, "0002", down=True)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fits WHERE ci IS NULL")).scalar_one() == 0
    engine.dispose()


def test_migration_0002_upgrades_a_0001_store_and_keeps_its_rows(url: str) -> None:
    engine = old_store(url, "0001")
    assert "fits" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    with Store(url) as store:
        with store.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
        assert [s["name"] for s in store.studies()] == [STUDY]
        assert store.study(STUDY)["spec_yaml"] == SPEC
        populate(store)
        assert len(save_fits(store, STUDY, fit_study(store, STUDY))) == 3
        assert schema_diff(store.engine) == []


def test_schema_matches_the_orm_and_the_check_can_fail(url: str) -> None:
    with Store(url) as store:
        assert schema_diff(store.engine) == []
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_fits_study_id_arm_created_at"))
        assert [d[0] for d in schema_diff(store.engine)] == ["add_index"]
