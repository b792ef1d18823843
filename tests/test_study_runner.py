"""The study job graph and runner, with stand-in stages (tests/test_study_standins.py): caching by
input hash, resume, partial reruns after a config change, failures, kill -9, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import test_study_standins as standins
from loraocean.study import expand, load_config, query, run_study
from loraocean.study.runner import is_done

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
name: t
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition, bb_sports_understanding]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy, bb_implicatures]
library: {preset: smoke}
methods: [base, target_lora, loramoe, rocket, {name: xlora, config: {}}]
selection: {strategies: [ppl, random, manual], k: 2, shots: 4}
seeds: [0]
evaluation: {convention: lm-eval}
caps: {max_train: 8, max_fit: 8, max_eval: 40}
"""


def write(tmp_path: Path, text: str = STUDY, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def calls(run_dir: Path) -> list[str]:
    log = run_dir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_expand_counts_and_dependencies(tmp_path):
    cfg = load_config(write(tmp_path))
    jobs = expand(cfg)
    kinds = [j.kind for j in jobs]
    # 6 library tasks; 2 targets x 3 strategies selections; x 3 methods fits; + 2 x 2 references;
    # and rocket on its own default selection: 2 targets x (1 selection, 1 fit, 1 eval)
    assert kinds.count("lora") == 6
    assert kinds.count("select") == 6 + 2
    assert kinds.count("fit") == 18 + 2
    assert kinds.count("eval") == 18 + 4 + 2
    position = {j.key: n for n, j in enumerate(jobs)}
    for job in jobs:
        assert all(position[d] < position[job.key] for d in job.deps)
    # the target's own LoRA is never a candidate expert
    for job in jobs:
        if job.kind == "select":
            assert job.inputs["target"] not in job.inputs["candidates"]


def test_changed_config_changes_only_downstream_keys(tmp_path):
    base = {j.key: j for j in expand(load_config(write(tmp_path)))}
    changed = STUDY.replace("max_eval: 40", "max_eval: 30")
    new = {j.key: j for j in expand(load_config(write(tmp_path, changed, "b.yaml")))}
    kept = {base[k].kind for k in base.keys() & new.keys()}
    gone = {base[k].kind for k in base.keys() - new.keys()}
    assert kept == {"lora", "select", "fit"} and gone == {"eval"}
    # a method option changes that method's fits and evals only
    changed = STUDY.replace("{name: xlora, config: {}}", "{name: xlora, config: {top_k: 1}}")
    new = {j.key: j for j in expand(load_config(write(tmp_path, changed, "c.yaml")))}
    gone = [base[k] for k in base.keys() - new.keys()]
    assert gone and all(j.inputs["method"] == "xlora" for j in gone)
    assert len(gone) == 12  # 6 fits + 6 evals


def test_run_resume_and_partial_rerun(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(write(tmp_path))
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    n_jobs = len(expand(cfg))
    assert summary.ran == n_jobs and not summary.failed
    assert len(calls(run_dir)) == n_jobs
    # a rerun finds everything cached
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert summary.ran == 0 and summary.cached == n_jobs
    assert len(calls(run_dir)) == n_jobs
    # the results table: one row per (model, target, method, selection, seed, convention)
    df = query(run_dir)
    assert len(df) == 18 + 4 + 2
    assert set(df["selection"]) == {"none", "ppl", "random", "manual", "rocket"}
    row = df[(df.method == "loramoe") & (df.selection == "manual") & (df.target == "bb_intent_recognition")].iloc[0]
    expected = [standins.u01("bb_intent_recognition", 0, "lm-eval", "loramoe", "manual", k) < 0.85
                for k in range(40)]
    assert row["value"] == pytest.approx(sum(expected) / 40)
    assert row["n"] == 40 and row["majority_rate"] == 0.10
    assert json.loads(row["experts"]) == ["bb_implicatures", "bb_snarks"]  # manual stand-in: sorted
    assert json.loads(row["versions"])["torch"]
    assert row["config_hash"] and row["fit_key"] and row["select_key"]
    # changing the evaluation cap reruns exactly the evaluations
    before = len(calls(run_dir))
    cfg2 = load_config(write(tmp_path, STUDY.replace("max_eval: 40", "max_eval: 30"), "b.yaml"))
    summary = run_study(cfg2, run_dir, stages=standins.STAGES, fetch=False)
    new_calls = calls(run_dir)[before:]
    assert summary.ran == 24 and all(c.startswith("eval ") for c in new_calls)
    assert set(query(run_dir)["n"]) == {30}


def test_failure_is_recorded_dependents_skipped_then_fixed(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = load_config(write(tmp_path))
    monkeypatch.setenv("STANDIN_FAIL", '"strategy": "ppl"')  # every ppl selection fails
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert len(summary.failed) == 2  # one per target
    assert len(summary.skipped) == 2 * 3 * 2  # their fits and evals
    assert len(list((run_dir / "failed").glob("*.json"))) == 2
    assert "ppl" not in set(query(run_dir)["selection"])
    monkeypatch.delenv("STANDIN_FAIL")
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert summary.ran == 2 + 12 and not summary.failed
    assert not list((run_dir / "failed").glob("*.json"))


def test_kill_9_then_rerun_reuses_finished_jobs(tmp_path):
    """A real subprocess runs the study with slow stand-in stages; SIGKILL it mid-way; rerun."""
    study = write(tmp_path)
    run_dir = tmp_path / "run"
    script = tmp_path / "go.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import test_study_standins as standins
        from loraocean.study import load_config, run_study
        run_study(load_config({str(study)!r}), {str(run_dir)!r}, stages=standins.STAGES, fetch=False)
    """))
    env = {**os.environ, "STANDIN_SLEEP": "0.15"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + 60
    while len(calls(run_dir)) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = load_config(study)
    jobs = expand(cfg)
    finished = [j for j in jobs if is_done(run_dir, j)]
    assert 6 <= len(finished) < len(jobs)
    mtimes = {j.key: (run_dir / "jobs" / j.name / "result.json").stat().st_mtime_ns for j in finished}
    before = len(calls(run_dir))
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert not summary.failed and summary.cached == len(finished)
    assert all(is_done(run_dir, j) for j in jobs)
    rerun = {c.split()[1] for c in calls(run_dir)[before:]}
    assert not rerun & set(mtimes)  # no finished job ran again
    assert all((run_dir / "jobs" / j.name / "result.json").stat().st_mtime_ns == mtimes[j.key] for j in finished)
    assert len(query(run_dir)) == 24


SMALL = STUDY.replace("[bb_intent_recognition, bb_sports_understanding]", "[bb_intent_recognition]").replace(
    "[ppl, random, manual]", "[random, manual]").replace("methods: [base, target_lora, loramoe, rocket, {name: xlora, config: {}}]",
                                                          "methods: [base, loramoe]")


def test_ray_executor_matches_local(tmp_path):
    """Real Ray (2 local CPUs) runs the same graph and writes the same results as the local executor."""
    import ray

    cfg = load_config(write(tmp_path, SMALL + "executor: {kind: ray, num_cpus: 1}\n"))
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    try:
        summary = run_study(cfg, tmp_path / "ray", stages=standins.STAGES, fetch=False)
    finally:
        ray.shutdown()
    assert summary.ran == len(expand(cfg)) and not summary.failed
    local = run_study(load_config(write(tmp_path, SMALL, "l.yaml")), tmp_path / "local",
                      stages=standins.STAGES, fetch=False)
    assert local.ran == summary.ran
    cols = ["model", "target", "method", "selection", "seed", "convention", "value", "experts"]
    a = query(tmp_path / "ray")[cols].reset_index(drop=True)
    b = query(tmp_path / "local")[cols].reset_index(drop=True)
    assert a.equals(b)


def test_one_run_per_folder(tmp_path):
    from loraocean.errors import LoraOceanError
    from loraocean.study.runner import run_lock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with run_lock(run_dir):
        with pytest.raises(LoraOceanError, match="another `loraocean run` is using"):
            run_study(load_config(write(tmp_path)), run_dir, stages=standins.STAGES, fetch=False)


def test_a_damaged_result_is_redone_not_trusted(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(write(tmp_path, SMALL))
    run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    ev = next(j for j in expand(cfg) if j.kind == "eval" and j.inputs["method"] == "loramoe")
    cols = ["model", "target", "method", "selection", "seed", "convention", "value", "n", "experts"]
    good = query(run_dir)[cols]
    (run_dir / "jobs" / ev.name / "result.json").write_text('{"scores": [')   # torn / corrupt
    assert not is_done(run_dir, ev)
    before = len(calls(run_dir))
    summary = run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert summary.ran == 1 and calls(run_dir)[before:] == [f"eval {ev.key}"]
    assert query(run_dir)[cols].equals(good)


def test_stale_temp_folders_of_dead_writers_are_cleaned(tmp_path):
    from loraocean.library import Library
    from loraocean.study.runner import Context

    run_dir = tmp_path / "run"
    cfg = load_config(write(tmp_path, SMALL))
    lib_root = Context(cfg=cfg, run_dir=run_dir, jobs={}).library_root("tiny-llama")
    dead = [lib_root / "tiny-llama" / ".tmp-bb_snarks-x1", run_dir / "jobs" / ".tmp-lora-abc-x2"]
    for d in dead:  # what a writer killed mid-write leaves (nobody holds their lock)
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"half")
    assert Library(lib_root).verify().leftovers
    run_study(cfg, run_dir, stages=standins.STAGES, fetch=False)
    assert not any(d.exists() for d in dead)
    assert not Library(lib_root).verify().leftovers


CRASH = """\
name: crash
models: [tiny-llama]
tasks:
  targets: [bb_sports_understanding]
  pool: [bb_snarks]
library: {preset: smoke}
methods: [base, target_lora]
selection: {strategies: [manual], k: 1, shots: 2}
seeds: [0]
evaluation: {convention: lm-eval}
caps: {max_train: 8, max_train_steps: 1, max_fit: 8, max_eval: 8}
"""


def test_kill_9_during_a_lora_write_then_rerun_leaves_a_clean_library(tmp_path):
    """The real stages on a tiny model; the process is SIGKILLed inside a LoRA's atomic write (its
    weights are in the temp folder, the card not yet), then the study is run again."""
    from loraocean.library import Library
    from loraocean.study.runner import Context

    study = write(tmp_path, CRASH)
    run_dir = tmp_path / "run"
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        import loraocean.library.train as train
        from loraocean.study import load_config, run_study

        def die(folder, card, *args, **kwargs):  # called in the temp folder, before the rename
            assert (folder / "adapter_model.safetensors").is_file()
            os.kill(os.getpid(), signal.SIGKILL)

        train.write_card = die
        run_study(load_config({str(study)!r}), {str(run_dir)!r}, fetch=False)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    cfg = load_config(study)
    lib = Library(Context(cfg=cfg, run_dir=run_dir, jobs={}).library_root("tiny-llama"))
    report = lib.verify()
    assert report.leftovers and not lib.list()  # half-written, and nothing that looks finished
    summary = run_study(cfg, run_dir, fetch=False)
    assert not summary.failed and all(is_done(run_dir, j) for j in expand(cfg))
    report = lib.verify()
    assert report.clean and not report.leftovers
    assert sorted(e.task for e in lib.list()) == ["bb_snarks", "bb_sports_understanding"]
