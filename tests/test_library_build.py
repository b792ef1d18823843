"""`library build` on the shared engine: a `bigbench:PATH` task of one's own in every executor,
and two concurrent builds of one root sharing the work instead of clashing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIGBENCH
from loraocean.library import Library, build
from loraocean.library.build import BUILD

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("executor, workers", [("local", 1), ("local", 2), ("ray", 2)])
def test_build_trains_a_relative_bigbench_path_in_every_executor(tmp_path, monkeypatch, executor, workers):
    shutil.copytree(BIGBENCH / "sports_understanding", tmp_path / "mine" / "sports_understanding")
    monkeypatch.chdir(tmp_path)  # the reference is relative to the driver's folder
    results = build("lib", ["tiny-llama"], ["bigbench:mine/sports_understanding"], "smoke", limit=8,
                    executor=executor, workers=workers)
    assert [(r.task, r.status) for r in results] == [("bb_sports_understanding", "trained")], results
    entry = Library(tmp_path / "lib").get("tiny-llama", "bb_sports_understanding")
    assert entry.card["task_source"] == f"bigbench:{tmp_path / 'mine' / 'sports_understanding'}"
    assert entry.card["n_train"] == 8
    again = build("lib", ["tiny-llama"], ["bigbench:mine/sports_understanding"], "smoke", limit=8)
    assert [r.status for r in again] == ["skipped"]


def test_two_concurrent_builds_share_the_work(tmp_path):
    root = tmp_path / "lib"
    args = [sys.executable, "-c", "from loraocean.cli import main; main()", "library", "build",
            "--models", "tiny-llama", "--tasks", "bb_sports_understanding,bb_implicatures",
            "--preset", "smoke", "--limit", "8", "--root", str(root)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = [re.search(r"^(\d+) trained, (\d+) skipped, 0 stale, 0 failed", out, re.M) for out in outs]
    assert all(counts), outs
    trained = sum(int(m.group(1)) for m in counts)
    skipped = sum(int(m.group(2)) for m in counts)
    assert (trained, skipped) == (2, 2), outs  # each pair trained once, found done by the other
    lib = Library(root)
    assert sorted(e.task for e in lib.list()) == ["bb_implicatures", "bb_sports_understanding"]
    assert lib.verify().clean
    failed = root / BUILD / "failed"
    assert not failed.exists() or not any(failed.iterdir())
