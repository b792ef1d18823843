"""`loraocean data fetch bigbench` on a small hand-made archive in the sdist's layout (not the
real 358 MB download), then the fetched tasks by name."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from loraocean.tasks import get_task, load_split
from loraocean.tasks.store import source_splits


def cli(*args) -> int:
    from loraocean.cli import main

    with pytest.raises(SystemExit) as exit:
        main([str(a) for a in args])
    return exit.value.code


def task_file(prefix: str, n: int) -> dict:
    return {"name": prefix, "task_prefix": "Answer.", "append_choices_to_input": False,
            "examples": [{"input": f"{prefix} question {i}?",
                          "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2 == 1)}}
                         for i in range(n)]}


def make_sdist(path):
    files = {
        "bigbench-1.0.0/bigbench/benchmark_tasks/intent_recognition/task.json":
            task_file("intent", 40),
        "bigbench-1.0.0/bigbench/benchmark_tasks/logical_deduction/three_objects/task.json":
            task_file("three", 30),
        "bigbench-1.0.0/bigbench/benchmark_tasks/logical_deduction/task.json":
            {"name": "logical_deduction", "subtasks": ["three_objects"]},
        "bigbench-1.0.0/bigbench/benchmark_tasks/intent_recognition/README.md": "not copied",
        "bigbench-1.0.0/setup.py": "not copied",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = (json.dumps(content) if isinstance(content, dict) else content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_fetch_from_an_sdist_archive_then_use_tasks_by_name(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("LORAOCEAN_HOME", str(home))
    monkeypatch.delenv("LORAOCEAN_BIGBENCH", raising=False)
    archive = tmp_path / "bigbench-1.0.0.tar.gz"
    make_sdist(archive)
    assert cli("data", "fetch", "bigbench", "--archive", archive) == 0
    root = home / "data" / "bigbench"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "FETCHED.json", "intent_recognition/task.json", "logical_deduction/task.json",
        "logical_deduction/three_objects/task.json"]
    assert json.loads((root / "FETCHED.json").read_text())["task_files"] == 3
    n = sum(len(load_split("bb_intent_recognition", s)) for s in ("train", "dev", "test"))
    assert n == 40
    assert get_task("bb_logical_deduction_three_objects").source == \
        "bigbench:logical_deduction/three_objects"
    assert len(load_split("bb_logical_deduction_three_objects", "test")) > 0
    capsys.readouterr()
    assert cli("tasks", "list", "--source", f"bigbench:{root}") == 0
    out = capsys.readouterr().out
    assert "intent_recognition" in out and "logical_deduction_three_objects" in out
    # a second fetch is a no-op; a broken archive is a clear error and leaves the copy intact
    assert cli("data", "fetch", "bigbench") == 0
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar")
    assert cli("data", "fetch", "bigbench", "--archive", broken, "--force") == 2
    assert "not a readable .tar.gz" in capsys.readouterr().err
    assert (root / "intent_recognition" / "task.json").is_file()


def simple_index(tmp_path, archive, sha: str) -> str:
    """A PEP 503 package index on disk whose bigbench page links `archive` with `sha`."""
    page = tmp_path / "index" / "bigbench"
    page.mkdir(parents=True)
    (page / "index.html").write_text(
        f'<html><body><a href="../../other-0.1.tar.gz">other</a>\n'
        f'<a href="{archive.as_uri()}#sha256={sha}">bigbench-1.0.0.tar.gz</a></body></html>')
    return (tmp_path / "index").as_uri()


def test_fetch_downloads_from_the_index_and_checks_the_hash(tmp_path, monkeypatch):
    import hashlib

    from loraocean.errors import LoraOceanError
    from loraocean.tasks import fetch

    monkeypatch.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORAOCEAN_BIGBENCH", raising=False)
    archive = tmp_path / "bigbench-1.0.0.tar.gz"
    make_sdist(archive)
    good = hashlib.sha256(archive.read_bytes()).hexdigest()

    monkeypatch.setenv("PIP_INDEX_URL", simple_index(tmp_path / "bad", archive, "0" * 64))
    with pytest.raises(LoraOceanError, match="differs from the published"):
        fetch.fetch_bigbench()
    assert not (tmp_path / "home" / "data" / "bigbench" / "FETCHED.json").exists()

    monkeypatch.setenv("PIP_INDEX_URL", simple_index(tmp_path / "good", archive, good))
    root = fetch.fetch_bigbench()
    assert json.loads((root / "FETCHED.json").read_text())["task_files"] == 3
    assert len(load_split("bb_intent_recognition", "train")) > 0


def test_a_fetched_copy_elsewhere_does_not_leak_into_later_loads(tmp_path, monkeypatch):
    """The examples read while $LORAOCEAN_HOME pointed at a small fetched copy are not what a
    later load returns once it points back (the task cache is keyed on the data location): this
    file's fake BIG-bench once made a later test count 913 test examples instead of 1,120."""
    real = len(source_splits(get_task("bb_intent_recognition"))["test"])
    assert len(load_split("bb_intent_recognition", "test")) == real  # cached for the tests' copy
    with monkeypatch.context() as m:
        m.setenv("LORAOCEAN_HOME", str(tmp_path / "home"))
        m.delenv("LORAOCEAN_BIGBENCH", raising=False)
        archive = tmp_path / "bigbench-1.0.0.tar.gz"
        make_sdist(archive)
        assert cli("data", "fetch", "bigbench", "--archive", archive) == 0
        assert sum(len(load_split("bb_intent_recognition", s)) for s in ("train", "dev", "test")) == 40
    assert real > 40 and len(load_split("bb_intent_recognition", "test")) == real
