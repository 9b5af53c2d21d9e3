"""The stage runner: keys flow down, one completion convention, integrity checks, one run per stage
even when processes race for it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from synpro.stages import MANIFEST, Runner, Stage, StageContext, is_done, read_manifest


class Count(Stage):
    """Writes `n` numbers (slowly) and counts its runs in a file outside its folder."""

    kind = "count"

    def __init__(self, n: int, inputs=None, log: Path | None = None, pause: float = 0.0):
        super().__init__({"n": n}, inputs)
        self.log, self.pause = log, pause

    def run(self, ctx: StageContext) -> dict:
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{self.key}\n")
        time.sleep(self.pause)
        upstream = sum(ctx.inputs.values())
        (ctx.folder / "numbers.txt").write_text(" ".join(str(upstream + i) for i in range(self.config["n"])))
        return {"sum": sum(upstream + i for i in range(self.config["n"]))}

    def load(self, folder, inputs):
        return sum(int(x) for x in (folder / "numbers.txt").read_text().split())


def test_keys_flow_down_from_config_and_inputs_only():
    a, a_again, b = Count(3), Count(3), Count(4)
    assert a.key == a_again.key != b.key
    assert Count(2, {"up": a}).key != Count(2, {"up": b}).key  # an upstream change reaches downstream
    assert Count(2, {"up": a}).key == Count(2, {"up": a_again}).key
    assert Count(2, {"up": a}).key != Count(2, {"other": a}).key  # the input's role is part of the key


def test_a_finished_stage_is_skipped_and_its_manifest_says_what_it_is(tmp_path):
    log = tmp_path / "runs.log"
    up = Count(3, log=log)
    down = Count(2, {"up": up}, log=log)
    assert Runner(tmp_path / "stages").run(down) == (0 + 1 + 2) * 2 + 1
    assert Runner(tmp_path / "stages").run(down) == 7  # a fresh runner: loaded, not run
    assert log.read_text().split() == [up.key, down.key]
    manifest = read_manifest(tmp_path / "stages" / down.dirname)
    assert manifest["key"] == down.key and manifest["inputs"] == {"up": up.key}
    assert manifest["metrics"] == {"sum": 7} and manifest["outputs"]["numbers.txt"]["size"] > 0
    assert "sha256" in manifest["outputs"]["numbers.txt"] and manifest["timings"]["seconds"] >= 0
    assert is_done(up, tmp_path / "stages") and is_done(down, tmp_path / "stages")


def test_damaged_outputs_are_rebuilt_and_temp_debris_cleared(tmp_path):
    log = tmp_path / "runs.log"
    stage = Count(3, log=log)
    folder = tmp_path / stage.dirname
    Runner(tmp_path).run(stage)
    (folder / "numbers.txt").write_text("0 1")  # same kind of file, wrong content: sizes and hashes catch it
    assert Runner(tmp_path).run(stage) == 3
    assert log.read_text().split() == [stage.key, stage.key]
    (folder / MANIFEST).unlink()  # as if killed before the manifest: no done stage, and its debris goes
    (folder / ".tmp-scratch").mkdir()
    assert not is_done(stage, tmp_path)
    Runner(tmp_path).run(stage)
    assert not (folder / ".tmp-scratch").exists() and len(log.read_text().split()) == 3


def test_loading_a_finished_stage_reads_only_files_whose_mtime_moved(tmp_path):
    """Sizes always; content only for a file whose mtime is not the recorded one (then once)."""
    log = tmp_path / "runs.log"
    stage = Count(3, log=log)
    Runner(tmp_path).run(stage)
    folder = tmp_path / stage.dirname
    manifest = json.loads((folder / MANIFEST).read_text())
    entry = manifest["outputs"]["numbers.txt"]
    assert entry["mtime_ns"] == (folder / "numbers.txt").stat().st_mtime_ns
    entry["sha256"] = "0" * 64  # a digest the file cannot match: only a re-read would notice
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert Runner(tmp_path).run(stage) == 3 and len(log.read_text().split()) == 1  # untouched: not read
    stat = (folder / "numbers.txt").stat()
    os.utime(folder / "numbers.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: read, and wrong
    assert Runner(tmp_path).run(stage) == 3 and len(log.read_text().split()) == 2

    before = json.loads((folder / MANIFEST).read_text())["outputs"]["numbers.txt"]
    stat = (folder / "numbers.txt").stat()
    os.utime(folder / "numbers.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same content
    assert Runner(tmp_path).run(stage) == 3 and len(log.read_text().split()) == 2  # re-hashed, kept
    after = json.loads((folder / MANIFEST).read_text())["outputs"]["numbers.txt"]
    assert after["sha256"] == before["sha256"] and after["mtime_ns"] == before["mtime_ns"] + 10**9


def test_a_folder_holding_another_key_is_never_overwritten(tmp_path):
    stage = Count(3)
    Runner(tmp_path).run(stage)
    manifest = json.loads((tmp_path / stage.dirname / MANIFEST).read_text())
    (tmp_path / stage.dirname / MANIFEST).write_text(json.dumps({**manifest, "key": "someone-else"}))
    with pytest.raises(RuntimeError, match="someone-else"):
        Runner(tmp_path).run(stage)


def _race(root: str, log: str) -> None:
    Runner(Path(root)).run(Count(5, log=Path(log), pause=1.0))


def test_two_processes_racing_for_one_stage_run_it_once(tmp_path):
    log = tmp_path / "runs.log"
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_race, args=(str(tmp_path / "stages"), str(log))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().split()) == 1
