"""The tests' forked CLI processes (tests/warm_cli.py) behave as plain `python -m cli` processes do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import warm_cli

CLI = [sys.executable, "-m", "cli"]
BROKEN = "experiment: {name: b}\nbudget: {unique_tokens: lots, total_tokens: 400}\n"


def both(args: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    plain = subprocess.run(CLI + args, capture_output=True, text=True, timeout=120, **kwargs)
    warm = warm_cli.run(CLI + args, capture_output=True, text=True, timeout=120, **kwargs)
    return plain, warm


def test_a_forked_call_prints_and_exits_as_a_plain_process(tmp_path):
    (tmp_path / "broken.yaml").write_text(BROKEN)
    env = {**os.environ, "COLUMNS": "100", "SYNPRO_ERROR_LOG": str(tmp_path / "error.log")}
    seen = {}
    for args in (["--help"], ["validate", "broken.yaml"], ["results", "--workdir", "nowhere"]):
        plain, warm = both(args, cwd=tmp_path, env=env)
        assert (warm.returncode, warm.stdout, warm.stderr) == (plain.returncode, plain.stdout, plain.stderr), args
        seen[args[0]] = warm
    assert seen["--help"].returncode == 0 and "sweep" in seen["--help"].stdout
    assert seen["validate"].returncode == 2 and "budget.unique_tokens" in seen["validate"].stdout + seen["validate"].stderr


def test_a_forked_child_is_its_own_process_and_a_foreign_environment_gets_a_plain_one(tmp_path):
    (tmp_path / "broken.yaml").write_text(BROKEN)
    proc = warm_cli.Popen(CLI + ["validate", "broken.yaml"], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert isinstance(proc, warm_cli.WarmProcess) and proc.pid not in (os.getpid(), warm_cli._server[0].pid)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "budget.unique_tokens" in out
    # Libraries the server imported read HF_HOME at import: a call that sets another one is not forked.
    other = warm_cli.Popen(CLI + ["--help"], env={**os.environ, "HF_HOME": str(tmp_path)}, stdout=subprocess.DEVNULL)
    assert isinstance(other, subprocess.Popen) and other.wait(timeout=120) == 0


def test_torch_setting_its_inductor_cache_in_this_process_keeps_calls_forked(tmp_path, monkeypatch):
    """Inductor writes TORCHINDUCTOR_CACHE_DIR into os.environ the first time it needs its cache (an in-process
    training test gets there): the calls after it must still be forked, not cold processes."""
    warm_cli.run(CLI + ["--help"], capture_output=True, timeout=120)  # the server, started before it was set
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cache_dir()  # what inductor runs: it makes the folder and writes the variable back
    proc = warm_cli.Popen(CLI + ["--help"], stdout=subprocess.DEVNULL)
    assert isinstance(proc, warm_cli.WarmProcess) and proc.wait(timeout=120) == 0


def test_what_the_servers_imports_set_keeps_calls_forked_once_this_process_sets_it_too(monkeypatch):
    """scikit-learn sets two OpenMP variables when it is imported: the server's imports set them, and an
    in-process test that imports it sets them here. Calls stay forked; another value is foreign."""
    warm_cli.run(CLI + ["--help"], capture_output=True, timeout=120)
    imports_set = warm_cli._server[3]
    assert imports_set  # else this test would show nothing
    for name, value in imports_set.items():
        monkeypatch.setenv(name, value)
    proc = warm_cli.Popen(CLI + ["--help"], stdout=subprocess.DEVNULL)
    assert isinstance(proc, warm_cli.WarmProcess) and proc.wait(timeout=120) == 0
    name, value = next(iter(imports_set.items()))
    monkeypatch.setenv(name, value + "-other")
    with pytest.warns(UserWarning, match=f"{name} changed in this pytest process"):  # the slow-down is shown
        other = warm_cli.Popen(CLI + ["--help"], stdout=subprocess.DEVNULL)
    assert isinstance(other, subprocess.Popen) and other.wait(timeout=120) == 0
