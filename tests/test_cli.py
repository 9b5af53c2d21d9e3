"""The CLI contract: exit codes, located one-screen errors, no tracebacks, nothing written on bad input."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
import warm_cli

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
runner = CliRunner()


def synpro(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process, as a user or another tool would call it."""
    return warm_cli.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands_with_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "sweep", "results", "ui"):
        assert command in result.output
    assert "Example" in runner.invoke(app, ["sweep", "--help"]).output


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_validate_shipped_specs(name):
    # The paper specs name a hub corpus and hub models this offline machine cannot have: shape only.
    extra = ["--shape-only"] if name.startswith("paper-") else []
    result = runner.invoke(app, ["validate", str(EXPERIMENTS / name), *extra])
    assert result.exit_code == 0, result.output
    assert "trials" in result.output and "U=" in result.output


BROKEN = {
    "unknown-key": ("experiment: {name: b}\nbudget: {unique_tokens: 100, total_tokens: 400}\nmodel: {presett: tiny}\n",
                    "model.presett"),
    "wrong-type": ("experiment: {name: b}\nbudget: {unique_tokens: lots, total_tokens: 400}\n", "budget.unique_tokens"),
    "missing": ("experiment: {name: b}\n", "budget"),
    "impossible": ("experiment: {name: b}\nbudget: {unique_tokens: 500, total_tokens: 400}\n", "budget.total_tokens"),
    "not-yaml": ("experiment: {name: b\n  budget: [\n", None),
    "missing-corpus": ("experiment: {name: b}\nbudget: {unique_tokens: 1000, total_tokens: 4000}\n"
                       "corpus: {source: jsonl, path: nowhere.jsonl}\n", "corpus.path"),
}


@pytest.mark.parametrize("case", ["unknown-key", "wrong-type", "missing", "impossible", "not-yaml"])
def test_broken_specs_exit_2_with_file_and_key(tmp_path, case):
    text, key = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = synpro("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert str(path) in result.stderr
    if key:
        assert f"[{key}]" in result.stderr
    assert len(result.stderr.splitlines()) < 25


@pytest.mark.parametrize("case", ["impossible", "missing-corpus"])
def test_broken_sweep_writes_nothing(tmp_path, case):
    text, key = BROKEN[case]
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    result = synpro("sweep", str(path), "--workdir", str(tmp_path / "wd"), "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"[{key}]" in result.stderr
    if (tmp_path / "wd" / "synpro.db").exists():  # the store may exist, but holds no trial
        from store import Store

        with Store(f"sqlite:///{tmp_path / 'wd' / 'synpro.db'}") as db:
            assert all(t["state"] != "finished" and not t["arms"] for t in db.results())


def test_missing_spec_file_is_exit_2(tmp_path):
    result = synpro("sweep", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_results_without_a_store_is_exit_2(tmp_path):
    result = synpro("results", "--workdir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no results store" in result.stderr


# ---- the guard: machine faults and secrets ------------------------------------------------------


def _guard_exit(fn) -> int:
    import typer

    from cli.app import guarded

    with pytest.raises(typer.Exit) as stopped:
        guarded(fn)()
    return stopped.value.exit_code


def test_a_read_only_sqlite_database_is_a_machine_fault_exit_2(tmp_path, capsys):
    import sqlalchemy as sa

    db = tmp_path / "ro.db"
    sa.create_engine(f"sqlite:///{db}").connect().exec_driver_sql("create table t (x int)").close()
    engine = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")

    def write() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("insert into t values (1)")

    assert _guard_exit(write) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "writable folder" in err and "Traceback" not in err


def test_a_full_device_is_exit_2_naming_the_file(capsys):
    def write() -> None:
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            try:
                os.write(fd, b"x")
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, "/dev/full") from None
        finally:
            os.close(fd)

    assert _guard_exit(write) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "/dev/full: the disk is full" in err and "free space" in err


def test_errors_and_the_error_log_never_show_a_password(tmp_path, capsys, monkeypatch):
    from cli import app as cli_app
    from synpro.errors import InputError

    monkeypatch.setattr(cli_app, "ERROR_LOG", tmp_path / "last-error.log")
    url = "postgresql+psycopg://root:hunter2-pw@db:5432/x"

    def bad_input() -> None:
        raise InputError.one(f"cannot reach {url}", key="store.url")

    def crash() -> None:
        raise RuntimeError(f"driver said: connection to {url} refused")

    assert _guard_exit(bad_input) == 2
    assert _guard_exit(crash) == 1
    shown = capsys.readouterr().err + (tmp_path / "last-error.log").read_text()
    assert "hunter2-pw" not in shown and "root:***@db" in shown


def test_validate_masks_the_store_password(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("experiment: {name: s}\nbudget: {unique_tokens: 1000, total_tokens: 4000}\n"
                    "store: {url: 'postgresql+psycopg://root:hunter2-pw@db:5432/x'}\n")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert "hunter2-pw" not in result.output and "root:***@db" in result.output


# ---- synpro ui ----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_stops_its_server_and_every_worker_of_it(tmp_path, sig):
    import time

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the MLflow server did not come up"
            time.sleep(0.5)
        [server] = _children(proc.pid)
        assert os.getpgid(server) == server  # a process group of its own, so the whole group can be stopped
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 128 + sig
        with pytest.raises(ProcessLookupError):
            os.killpg(server, 0)
        assert not _listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_version_and_h_as_help_everywhere():
    from synpro import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"synpro {__version__}"
    for command in ([], ["results"], ["compare"], ["validate"]):
        shown = runner.invoke(app, [*command, "-h"])
        assert shown.exit_code == 0 and "Usage" in shown.output, command
    for command in ("probe", "score", "serve-influence"):  # their help speaks of the workdir's defaults
        assert "--workdir" in runner.invoke(app, [command, "-h"]).output, command
    # the fit help's sentence on intervals reads whole (rich once ate its "[low, high]" as markup)
    fit_help = " ".join(runner.invoke(app, ["fit", "-h"]).output.split())
    assert "else a low-high pair per fitted constant" in fit_help


def test_json_errors_go_to_stdout_located_and_cli_errors_name_no_made_up_file(tmp_path):
    text, key = BROKEN["impossible"]
    path = tmp_path / "impossible.yaml"
    path.write_text(text)
    result = synpro("validate", str(path), "--format", "json", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [error] = json.loads(result.stdout)["errors"]
    assert error["file"] == str(path) and error["key"] == key and error["line"] == 2 and "T=" in error["message"]
    assert str(path) in result.stderr  # people still get the one-screen message
    missing = runner.invoke(app, ["results", "--workdir", str(tmp_path), "--format", "json"])
    [error] = json.loads(missing.stdout)["errors"]
    assert missing.exit_code == 2 and error["file"] == str(tmp_path / "synpro.db")
    flag = runner.invoke(app, ["fit", "--format", "json"])
    assert flag.exit_code == 2 and json.loads(flag.stdout)["errors"][0]["file"] == "command line"
    assert "<input>" not in flag.output
