"""The cost ledger of a real tiny sweep: each arm's device-hours are the sum of the usage its stages
recorded, the trial's counts each stage once, and results and compare show them with the cost per
million effective tokens gained over repetition."""

from __future__ import annotations

import json

import pytest

from synpro import ledger
from test_sweep import SIZES, results_json, synpro, write_spec


def test_the_ledger_sums_the_stage_timings_it_recorded(tmp_path):
    spec, workdir = write_spec(tmp_path, sizes={**SIZES, "total": 12000}, evaluate=True), tmp_path / "wd"
    done = synpro("sweep", str(spec), "--workdir", str(workdir), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifests = {p.parent.name: json.loads(p.read_text()) for p in (workdir / "stages").glob("*/_stage.json")}
    for name, manifest in manifests.items():
        usage = manifest["usage"]
        assert usage["device"] == "cpu" and usage["devices"] >= 1 and usage["attempts"] == 1, name
        assert usage["seconds"] == pytest.approx(manifest["timings"]["seconds"], abs=0.5)
        assert usage["cpu_core_hours"] == pytest.approx(usage["seconds"] * usage["devices"] / 3600)

    def hours(*prefixes: str, label: str | None = None) -> float:
        return sum(m["usage"]["cpu_core_hours"] for name, m in manifests.items()
                   if name.startswith(prefixes) and label in (None, m["label"]))

    [trial] = results_json(workdir)
    assert trial["usage"]["cpu_core_hours"] == pytest.approx(hours(""))  # every stage once
    assert trial["usage"]["gpu_hours"] == 0 and trial["usage"]["unmeasured_stages"] == 0
    shared = hours("pools-", "evaltask-")
    for arm, own in (("repetition", ()), ("oracle", ("extra-",))):
        expected = shared + (hours(*own) if own else 0.0) + hours("pretrain-", "evaluate-", label=arm)
        result = trial["arms"][arm]
        assert result["cpu_core_hours"] == pytest.approx(expected), arm
        by_kind = result["per_seed"]["1"]["usage_by_kind"]
        assert set(by_kind) == {"pools", "evaltask", "pretrain", "evaluate", *(["extra"] if own else [])}
    rep, oracle = trial["arms"]["repetition"], trial["arms"]["oracle"]
    gained = oracle["effective_tokens"] - rep["effective_tokens"]
    if gained > 0:  # the oracle normally ends above repetition's D_eff; the cost is its extra hours per M gained
        assert oracle["cost_per_m_effective_gained"] == pytest.approx(
            (oracle["cpu_core_hours"] - rep["cpu_core_hours"]) / (gained / 1e6))
        assert oracle["cost_unit"] == "cpu_core_hours"
    assert rep["cost_per_m_effective_gained"] is None  # no gain over itself
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    logged = client.get_run(rep["mlflow_run_id"]).data.metrics
    assert logged["usage/cpu_core_hours"] == pytest.approx(rep["cpu_core_hours"]) and logged["usage/gpu_hours"] == 0
    assert client.get_run(trial["mlflow_run_id"]).data.metrics["usage/cpu_core_hours"] == pytest.approx(hours(""))

    table = synpro("results", "--workdir", str(workdir), cwd=tmp_path)
    assert table.returncode == 0 and "device-h" in table.stdout and "core-h" in table.stdout
    compared = synpro("compare", "--workdir", str(workdir), "--format", "json", "--out", str(tmp_path / "r"),
                      cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    rows = {r["arm"]: r for r in json.loads(compared.stdout)["arms"]}
    assert rows["oracle"]["mean_cpu_core_hours"] == pytest.approx(oracle["cpu_core_hours"])
    assert rows["repetition"]["mean_gpu_hours"] == 0


def test_cost_per_effective_token_gained_needs_a_gain_and_a_repetition_arm():
    arms = {"repetition": {"kind": "repetition", "gpu_hours": 2.0, "cpu_core_hours": 1.0, "effective_tokens": 1e9},
            "synpro": {"kind": "synpro", "gpu_hours": 5.0, "cpu_core_hours": 1.0, "effective_tokens": 4e9},
            "worse": {"kind": "prompted", "gpu_hours": 3.0, "cpu_core_hours": 1.0, "effective_tokens": 0.5e9}}
    ledger.add_costs(arms)
    assert arms["synpro"]["cost_per_m_effective_gained"] == pytest.approx(3.0 / 3000)  # 3 GPU-h per 3e9 tokens
    assert arms["synpro"]["cost_unit"] == "gpu_hours"
    assert arms["worse"]["cost_per_m_effective_gained"] is None
    lone = {"oracle": {"kind": "oracle", "gpu_hours": 1.0, "effective_tokens": 1e9}}
    ledger.add_costs(lone)
    assert "cost_per_m_effective_gained" not in lone["oracle"]


def test_no_cost_per_token_gained_from_partly_measured_arms():
    """A stage finished before the ledger existed has no usage: the difference of partial sums is no cost."""
    repetition = {"kind": "repetition", "cpu_core_hours": 1.0, "effective_tokens": 1e6,
                  "per_seed": {"0": {"cpu_core_hours": 1.0, "effective_tokens": 1e6, "unmeasured_stages": 0}}}
    arms = {"repetition": repetition,
            "prompted": {"kind": "prompted", "cpu_core_hours": 0.5, "effective_tokens": 2e6,
                         "per_seed": {"0": {"cpu_core_hours": 0.5, "effective_tokens": 2e6, "unmeasured_stages": 1}}}}
    ledger.add_costs(arms)
    assert arms["prompted"]["cost_per_m_effective_gained"] is None
    assert arms["prompted"]["per_seed"]["0"]["cost_per_m_effective_gained"] is None
    arms["prompted"]["per_seed"]["0"]["unmeasured_stages"] = 0
    ledger.add_costs(arms)
    assert arms["prompted"]["cost_per_m_effective_gained"] == pytest.approx(-0.5)  # cheaper, by what was measured
