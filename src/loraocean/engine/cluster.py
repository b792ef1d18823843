"""The Ray executor: one Ray task per item, with the item's resources, retried when its worker or
node is lost (`max_retries`). The only place that calls `ray.init`.

Everything a task needs travels with it: the item (absolute paths), and the environment
(`LORAOCEAN_*`, Hugging Face settings, `PYTHONPATH`) in the task's `runtime_env`, so a cluster
started from another folder, without those variables, runs the same jobs. Ray reuses worker
processes, so each worker's model cache lives on between tasks.
"""

from __future__ import annotations

import os

from loraocean.engine.work import Outcome, Work, perform
from loraocean.errors import ClusterError, MissingPackageError

# Variables a worker needs to find the same data, cache and code as the driver.
TRAVEL = ("TOKENIZERS_PARALLELISM", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
          "TRANSFORMERS_OFFLINE", "PYTHONPATH", "LORAOCEAN_CACHE_GB")


def travelling_env() -> dict:
    """The driver's environment that jobs need on any worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("LORAOCEAN_") or k in TRAVEL}


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingPackageError("Ray", "pip install 'loraocean[ray]'") from None
    return ray


def reachable(address: str) -> None:
    """Fail in seconds, in one line, when nothing listens at `address` (Ray itself retries for
    minutes); `auto` and addresses without a port are left to Ray."""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ClusterError(f"no Ray cluster at --address {address} ({err.strerror or err}); start one "
                           "with `ray start --head` and pass the address it prints") from None


def connect(address: str | None, workers: int) -> bool:
    """Join the cluster at `address`, or start a private local Ray with `workers` CPUs (never
    an unrelated cluster that happens to run on this machine). True when this call started it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            reachable(address)
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=max(1, workers), include_dashboard=False,
                     log_to_driver=False)
    except ClusterError:
        raise
    except Exception as err:  # ConnectionError, auth and gRPC errors: one line for the user
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        if "AuthenticationError" in type(err.__cause__).__name__ + type(err).__name__:
            raise ClusterError(f"{where} requires token authentication: set RAY_AUTH_MODE=token "
                               "and give the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN "
                               "(`ray get-auth-token` on the head prints it)") from None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ClusterError(f"cannot start or join {where}: {first}; check --address (the head's "
                           "`ray start --head` prints it)") from None
    return True


def _run(work: Work) -> Outcome:
    return perform(work)


class RayExecutor:
    def __init__(self, address: str | None, workers: int, env: dict, max_retries: int = 3):
        self.ray = _ray()
        self.started = connect(address, workers)
        resources = self.ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.slots = max(1, int(resources.get("CPU", 1)))  # for the ETA; Ray queues the rest
        self.env = env
        self.remote = self.ray.remote(max_retries=max_retries, retry_exceptions=False)(_run)
        self.refs: dict = {}

    def start(self, ready: list[Work]) -> Work | None:
        if not ready:
            return None
        work = ready[0]
        if work.resources.gpus and not self.gpus:
            raise ClusterError(f"{work.label} asks for {work.resources.gpus} GPU but the Ray cluster "
                               "has none; start its nodes with GPUs or pass --num-gpus 0")
        ref = self.remote.options(**work.resources.ray_options(),
                                  runtime_env={"env_vars": self.env}).remote(work)
        self.refs[ref] = work
        return work

    def next(self) -> Outcome:
        done, _ = self.ray.wait(list(self.refs), num_returns=1)
        work = self.refs.pop(done[0])
        try:
            return self.ray.get(done[0])
        except self.ray.exceptions.RayError as err:  # lost more often than max_retries allows
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return Outcome(work.name, error=f"{type(err).__name__}: {first}")

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()
