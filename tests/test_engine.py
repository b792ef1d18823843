"""The shared job engine: the model cache (LRU under a bound, reloads counted, changed models
dropped), scheduling by dependency vs waves, cache affinity in the process pool, a dead worker,
the driver's artifact check and failure record, and stale temp folders of dead writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from loraocean.artifacts import atomic_dir, remove_stale
from loraocean.engine import CACHE, ModelCache, RunFolder, Work, execute
from loraocean.engine.cache import size_of
from loraocean.engine.local import InProcess, Pool

ROOT = Path(__file__).resolve().parents[1]


def fake_load(name: str):
    """A small stand-in base model: a Linear whose weights depend only on the name."""
    torch.manual_seed(sum(map(ord, name)))
    return torch.nn.Linear(8, 8), None


LINEAR_BYTES = (8 * 8 + 8) * 4  # float32 weight and bias


def test_cache_is_lru_under_its_bound_and_counts_loads():
    cache = ModelCache(max_bytes=2 * LINEAR_BYTES, loader=fake_load)
    a = cache.get("a")[0]
    assert size_of(a) == LINEAR_BYTES
    cache.get("b")
    cache.get("a")                   # a is now the most recently used
    cache.get("c")                   # no room for three: b (least recently used) goes
    assert list(cache.models) == ["a", "c"] and cache.loads == 3
    assert cache.get("a")[0] is a    # still cached, not reloaded
    cache.get("b")
    assert list(cache.models) == ["a", "b"] and cache.loads == 4


def test_fresh_copies_while_there_is_room_else_lends_and_settle_drops_a_changed_model():
    roomy = ModelCache(max_bytes=10 * LINEAR_BYTES, loader=fake_load)
    base = roomy.get("a")[0]
    copy = roomy.fresh("a")[0]
    assert copy is not base and torch.equal(copy.weight, base.weight)
    with torch.no_grad():
        copy.weight.add_(1.0)        # a job changes its private copy
    roomy.settle()
    assert roomy.get("a")[0] is base and roomy.loads == 1

    tight = ModelCache(max_bytes=LINEAR_BYTES, loader=fake_load)
    lent = tight.fresh("a")[0]
    assert lent is tight.get("a")[0]  # no room for a copy: the cached model itself
    tight.settle()                    # unchanged: kept
    assert "a" in tight.models
    with torch.no_grad():
        tight.fresh("a")[0].bias[0] += 1.0
    tight.settle()                    # changed: dropped, so the next job gets a clean one
    assert "a" not in tight.models
    again = tight.get("a")[0]
    assert tight.loads == 2 and torch.equal(again.weight, fake_load("a")[0].weight)
    assert torch.equal(again.bias, fake_load("a")[0].bias)


# ---- items run by the engine (module-level, so spawned workers can import them) -------------------
def timed(seconds: float, model: str | None = None) -> dict:
    start = time.time()
    if model is not None:
        CACHE.loader = fake_load
        CACHE.get(model)
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "pid": os.getpid()}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def item(name, kind, seconds, deps=(), model=None, fn=timed):
    args = (seconds, model) if fn is timed else ()
    return Work(name=name, kind=kind, label=name, fn=fn, args=args, deps=tuple(deps), model=model)


def graph():
    """Target A's fit needs only A's LoRA; B's LoRA takes much longer."""
    return [item("lora-a", "lora", 0.1), item("lora-b", "lora", 3.0), item("fit-a", "fit", 0.1, ["lora-a"])]


def test_dependency_scheduling_starts_a_job_when_its_inputs_exist(tmp_path):
    report = execute(graph(), Pool(2, {}), RunFolder(tmp_path / "dep"))
    v = {n: o.value for n, o in report.outcomes.items()}
    assert v["fit-a"]["start"] >= v["lora-a"]["end"]
    assert v["fit-a"]["end"] < v["lora-b"]["end"]      # ran while B's LoRA still trained
    waves = execute(graph(), Pool(2, {}), RunFolder(tmp_path / "waves"), waves=("lora", "fit"))
    v = {n: o.value for n, o in waves.outcomes.items()}
    assert v["fit-a"]["start"] >= v["lora-b"]["end"]   # the old schedule waits for every LoRA
    progress = (tmp_path / "dep" / "progress.txt").read_text()
    assert "lora     done 2  running 0  failed 0  queued 0" in progress
    assert "fit      done 1" in progress


def test_pool_sends_a_model_s_jobs_to_the_worker_holding_it(tmp_path):
    def jobs():
        return [item("1", "x", 0.1, model="m1"), item("2", "x", 3.0, model="m2"),
                item("3", "x", 0.1, model="m2"), item("4", "x", 0.1, model="m1")]

    one_model = {"LORAOCEAN_CACHE_GB": str(1.5 * LINEAR_BYTES / 2**30)}  # a worker holds one model
    # worker A: 1 (m1), then 4 (m1, held), then 3 (m2) while worker B still runs 2 (m2)
    near = execute(jobs(), Pool(2, one_model, affinity=True), RunFolder(tmp_path / "a"))
    # without affinity worker A takes 3 (m2) first, then must reload m1 for 4
    far = execute(jobs(), Pool(2, one_model, affinity=False), RunFolder(tmp_path / "b"))
    assert not near.failed and not far.failed
    assert (near.loads, far.loads) == (3, 4)
    assert near.ran == ["1", "4", "3", "2"] and far.ran == ["1", "3", "4", "2"]


def test_a_dead_worker_fails_its_job_and_is_replaced(tmp_path):
    folder = RunFolder(tmp_path)
    report = execute([item("boom", "x", 0, fn=die), item("after", "x", 0.0, deps=["boom"]),
                      item("other", "x", 0.0)], Pool(1 + 1, {}), folder)
    assert "worker process died" in report.failed["boom"]
    assert report.skipped == ["after"] and report.ran == ["other"]
    assert "worker process died" in folder.failure("boom").read_text()


def test_driver_checks_the_artifact_and_keeps_one_failure_record(tmp_path):
    folder = RunFolder(tmp_path / "run")
    art = tmp_path / "out.json"
    work = Work(name="w", kind="x", label="the job", fn=timed, args=(0.0,), artifact=str(art))
    report = execute([work], InProcess(), folder)
    assert "is missing or unreadable on the driver" in report.failed["the job"]
    assert folder.failure("w").is_file()
    art.write_text("{not json")      # damaged: still not done
    assert execute([work], InProcess(), folder).failed
    art.write_text('{"ok": true}')
    assert not execute([work], InProcess(), folder).failed
    assert not folder.failure("w").exists()


def test_remove_stale_keeps_a_live_writer_and_removes_a_dead_one(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from loraocean.artifacts import atomic_dir
        with atomic_dir({str(tmp_path / 'final')!r}) as tmp:
            (tmp / 'part').write_text('x')
            print(tmp, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.is_dir() and tmp.name.startswith(".tmp-final-")
        with atomic_dir(tmp_path / "mine") as own:   # this process's own live write
            assert remove_stale([tmp, own]) == []
            assert tmp.is_dir() and own.is_dir()
    finally:
        proc.kill()
        proc.wait()
    assert remove_stale([tmp]) == [tmp] and not tmp.exists()
    assert not (tmp_path / "final").exists() and (tmp_path / "mine").is_dir()


def test_no_cluster_at_the_address_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    cli = [sys.executable, "-c", "from loraocean.cli import main; main()"]
    for args in (["run", "ci", "--executor", "ray", "--address", f"127.0.0.1:{port}",
                  "--run-dir", str(tmp_path / "run"), "--no-report"],
                 ["library", "build", "--models", "tiny-llama", "--tasks", "bb_snarks", "--preset", "smoke",
                  "--root", str(tmp_path / "lib"), "--executor", "ray", "--address", f"127.0.0.1:{port}"]):
        proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"no Ray cluster at --address 127.0.0.1:{port}" in lines[0], proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
