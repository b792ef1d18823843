"""Executors on this machine: in this process, or a pool of worker processes.

Pool workers are spawned processes that each keep their own model cache; the driver sends a job of
one base model to an idle worker that already holds it when there is one (cache affinity). With
GPUs, worker i sees only GPU i mod #GPUs (`CUDA_VISIBLE_DEVICES`), so `--workers N` on a machine
with N GPUs runs N GPU jobs at once. A worker that dies fails its job and is replaced.

Workers die with the driver: on Linux each asks the kernel for SIGKILL when its parent dies
(`PR_SET_PDEATHSIG`; the parent is the driver thread that made the pool, which holds it until
`close`), elsewhere a thread waits on the driver's sentinel; so a kill -9 of the driver (what an
out-of-memory kill does) leaves no worker running.
"""

from __future__ import annotations

import multiprocessing
import os
import queue

from loraocean.engine.work import Outcome, Work, perform


def _pick(ready: list[Work], model: str | None, affinity: bool) -> Work:
    if affinity and model is not None:
        for w in ready:
            if w.model == model:
                return w
    return ready[0]


class InProcess:
    """One job at a time in this process (its model cache is this process's)."""

    slots = 1

    def __init__(self):
        self.gpus = gpu_count()
        self._next: Outcome | None = None
        self._model: str | None = None

    def start(self, ready: list[Work]) -> Work | None:
        if self._next is not None or not ready:
            return None
        work = _pick(ready, self._model, True)
        self._model = work.model or self._model
        self._next = perform(work)
        return work

    def next(self) -> Outcome:
        out, self._next = self._next, None
        return out

    def close(self) -> None:
        pass


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """End this process when its parent dies (see the module doc); at once if it is already gone."""
    import signal
    import sys

    parent = multiprocessing.parent_process()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if parent is not None and os.getppid() != parent.pid:  # it died before the call above
            os._exit(1)
    elif parent is not None:
        import threading
        from multiprocessing.connection import wait

        threading.Thread(target=lambda: (wait([parent.sentinel]), os._exit(1)), daemon=True).start()


def _worker(inbox, outbox, env: dict) -> None:
    die_with_parent()
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env.get("LORAOCEAN_THREADS", "1")))
    outbox.put(Outcome(name=""))  # ready: imports done
    while (work := inbox.get()) is not None:
        outbox.put(perform(work))


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class Pool:
    def __init__(self, workers: int, env: dict, affinity: bool = True):
        self.slots = workers
        self.affinity = affinity
        self.ctx = multiprocessing.get_context("spawn")
        self.outbox = self.ctx.Queue()
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.gpus = gpus = gpu_count()
        self.envs = [{**env, "LORAOCEAN_THREADS": str(threads),
                      **({"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {})} for i in range(workers)]
        self.procs = [None] * workers
        self.inboxes = [None] * workers
        self.busy: dict[int, Work] = {}
        self.model: dict[int, str | None] = {}
        for i in range(workers):
            self._spawn(i)
        for _ in range(workers):  # every worker up before the first job is timed
            self.outbox.get(timeout=600)

    def _spawn(self, i: int) -> None:
        self.inboxes[i] = self.ctx.Queue()
        self.procs[i] = self.ctx.Process(target=_worker, args=(self.inboxes[i], self.outbox, self.envs[i]),
                                         daemon=True)
        self.procs[i].start()
        self.model[i] = None

    def start(self, ready: list[Work]) -> Work | None:
        idle = [i for i in range(self.slots) if i not in self.busy]
        if not idle or not ready:
            return None
        # an idle worker holding a ready job's model first, else any idle worker
        i = next((i for i in idle if self.affinity and any(w.model == self.model[i] for w in ready)), idle[0])
        work = _pick(ready, self.model[i], self.affinity)
        self.busy[i] = work
        self.model[i] = work.model
        self.inboxes[i].put(work)
        return work

    def next(self) -> Outcome:
        while True:
            try:
                out = self.outbox.get(timeout=1.0)
            except queue.Empty:
                for i, work in list(self.busy.items()):
                    if not self.procs[i].is_alive():  # killed: fail its job, start a new worker
                        code = self.procs[i].exitcode
                        del self.busy[i]
                        self._spawn(i)
                        return Outcome(work.name, error=f"worker process died (exit code {code}) "
                                                        "while running it")
                continue
            if not out.name:
                continue  # a replacement worker is ready
            for i, work in list(self.busy.items()):
                if work.name == out.name:
                    del self.busy[i]
            return out

    def close(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.is_alive():
                self.inboxes[i].put(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
