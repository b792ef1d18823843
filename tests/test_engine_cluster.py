"""A real Ray cluster on this machine, set up as a cluster user would: a head (`ray start --head`)
and a worker node (`ray start --address`), each with 1 CPU, both started from another folder and
without the LORAOCEAN_* variables or PYTHONPATH. `loraocean run --executor ray --address ...` runs
a small study with the real stages on tiny-llama (its target given as a relative `bigbench:PATH`,
its run folder relative too); the worker node is killed mid-run; the study still completes, and
its results table equals an in-process run's. Every Ray process started here is stopped by its
session id in a `finally` (never `ray stop`, which would also stop other users' Ray)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIGBENCH
from loraocean.study import load_config, query, run_study

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")

STUDY = """\
name: cluster
models: [tiny-llama]
tasks:
  targets: [bigbench:../data/sports_understanding]
  pool: [bb_anachronisms, bb_strategyqa]
library: {preset: smoke, seed: 0}
methods: [base, target_lora, loramoe]
selection: {strategies: [random], k: 2, shots: 4}
seeds: [0]
evaluation: {convention: lm-eval, batch_size: 8}
caps: {max_train: 16, max_train_steps: 2, max_fit: 8, max_fit_steps: 2, max_eval: 16}
"""
COLUMNS = ["model", "target", "method", "selection", "seed", "convention", "value", "n", "experts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(args: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """A `ray start --block` in its own session, so all its processes can be killed together."""
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--num-cpus", "1",
                             "--object-store-memory", str(80 * 2**20), *args], cwd=cwd, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    with_session = proc.pid  # start_new_session: the session (and process group) id is its pid
    try:
        os.killpg(with_session, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def status(address: str, env: dict) -> str:
    return subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True,
                          text=True, timeout=60).stdout


def running_task(session: int) -> bool:
    """Whether a process of this node's session is executing an engine job (Ray titles it
    `ray::_run` while it runs, `ray::IDLE` otherwise)."""
    ps = subprocess.run(["ps", "-eo", "sid=,args="], capture_output=True, text=True).stdout
    return any(line.split(None, 1)[0] == str(session) and "ray::_run" in line
               for line in ps.splitlines() if line.strip())


@pytest.mark.slow
def test_study_on_a_ray_cluster_survives_a_lost_worker_node(tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copytree(BIGBENCH / "sports_understanding", tmp_path / "data" / "sports_understanding")
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "study.yaml").write_text(STUDY)
    elsewhere = tmp_path / "cluster"
    elsewhere.mkdir()
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LORAOCEAN_") and k != "PYTHONPATH"}
    bare.update(auth)
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", ray_tmp],
                elsewhere, bare, tmp_path / "head.log")
    worker = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                time.sleep(1)
        worker = node(["--address", address], elsewhere, bare, tmp_path / "worker.log")
        deadline = time.time() + 120
        while time.time() < deadline and "/2.0 CPU" not in status(address, bare):
            time.sleep(2)  # the worker node registers with the head
        env = {**os.environ, **auth,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.Popen([sys.executable, "-c", "from loraocean.cli import main; main()", "run",
                                "study.yaml", "--executor", "ray", "--address", address,
                                "--run-dir", "runs/cluster", "--no-report"],
                               cwd=driver, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and run.poll() is None and not running_task(worker.pid):
            time.sleep(0.2)
        assert running_task(worker.pid), "no job ever ran on the worker node"
        stop(worker)  # the worker node and every process on it, while it runs a job
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out[-4000:]
        assert "8 ran, 0 cached, 0 failed" in out.replace("\n", " "), out[-4000:]
    finally:
        if worker is not None:
            stop(worker)
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # nothing was written under the cluster's folder; everything is in the driver's run folder
    assert not list(elsewhere.iterdir())
    on_cluster = query(driver / "runs" / "cluster")[COLUMNS].reset_index(drop=True)
    assert len(on_cluster) == 3  # base, target_lora, loramoe (random) on the target
    cwd = os.getcwd()
    os.chdir(driver)  # the same relative task path, resolved here
    try:
        cfg = load_config(driver / "study.yaml")
        local = run_study(cfg, tmp_path / "local", fetch=False)
    finally:
        os.chdir(cwd)
    assert local.ran == 8 and not local.failed
    assert query(tmp_path / "local")[COLUMNS].reset_index(drop=True).equals(on_cluster)
