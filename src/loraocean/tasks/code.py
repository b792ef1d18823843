"""Running model-written code against unit tests (HumanEval, MBPP pass@1), sandboxed.

Nothing here runs generated code in our own process. Each program runs in a fresh
`python -I -S` subprocess, in a new temporary folder, with these limits (each one a separate layer,
because no single one is enough on every machine):
- wall-clock timeout; then the whole process group is killed (SIGKILL);
- `resource.setrlimit`: address space (memory), CPU seconds, file size, open files, no core dumps;
- process count: RLIMIT_NPROC for a normal user; for root (which RLIMIT_NPROC does not limit) a
  `pids` cgroup with `pids.max` when the cgroup file system is writable;
- no network: a new network (and PID) namespace through `unshare` when the kernel allows it, so
  every process of the program dies with it; plus, always, a preamble that disables sockets and
  process creation from Python (`socket`, `os.fork`, `subprocess`, `os.system`), and an
  environment without proxies.
The preamble alone could be bypassed (ctypes); the limits above are what stop a determined program.

Public API: `run_tests(program, tests, entry_point, timeout)`, `check(example, completion)`,
`run_many(jobs)`, `program_for(example, completion)`, `process_limit()`.
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from loraocean.tasks.example import Example
from loraocean.tasks.extract import code_block

MAX_PROCESSES = 32      # processes the program may have at once (itself included)
MEMORY_MB = 1024        # address-space limit of each process
MAX_FILE_MB = 16        # largest file the program may write

# Written before the program: turns off network and process creation from Python.
PREAMBLE = '''\
def _loraocean_sandbox():
    import os, socket, subprocess
    def blocked(*args, **kwargs):
        raise PermissionError("disabled in the LoRAOcean code sandbox")
    for name in ("socket", "create_connection", "create_server", "socketpair", "getaddrinfo"):
        setattr(socket, name, blocked)
    for name in ("fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "spawnv",
                 "kill", "killpg", "setsid"):
        if hasattr(os, name):
            setattr(os, name, blocked)
    subprocess.Popen = blocked
_loraocean_sandbox()
del _loraocean_sandbox
'''


@dataclass(frozen=True)
class TestResult:
    passed: bool
    status: str  # "passed", "failed" (an assertion or error), "timeout"
    detail: str = ""  # the end of stderr, or why it was stopped


def program_for(example: Example, completion: str) -> str:
    """The program to test for a generated `completion`.

    HumanEval gives a prompt (signature + docstring) that the model continues; when the
    completion defines the entry point itself (chat models often repeat the whole function,
    fenced), the prompt's lines before the `def` (imports) are kept and the completion replaces
    the rest. MBPP completions are whole programs.
    """
    code = code_block(completion)
    prompt = example.metadata.get("prompt", "")
    entry = example.metadata.get("entry_point")
    if not prompt:
        return code
    if entry and f"def {entry}(" in code:
        head = prompt.split(f"def {entry}(", 1)[0]
        return head + code
    return prompt + code


def check(example: Example, completion: str, timeout: float = 10.0) -> TestResult:
    """Run `completion` against the tests of a HumanEval / MBPP example (pass@1 of one sample)."""
    return run_tests(program_for(example, completion), example.metadata["tests"],
                     example.metadata.get("entry_point"), timeout=timeout)


def run_many(jobs: list[tuple[str, str, str | None]], timeout: float = 10.0,
             workers: int = 4) -> list[TestResult]:
    """`run_tests` for many (program, tests, entry_point) triples, `workers` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(*job, timeout=timeout), jobs))


def run_tests(program: str, tests: str, entry_point: str | None = None, timeout: float = 10.0,
              memory_mb: int = MEMORY_MB) -> TestResult:
    """Run `program` then `tests` (then `check(entry_point)`, HumanEval's convention, when an
    entry point is given) in the sandbox. Passed = exit status 0 within `timeout` seconds."""
    script = PREAMBLE + "\n" + program + "\n\n" + tests + "\n"
    if entry_point:
        script += f"\ncheck({entry_point})\n"
    workdir = Path(tempfile.mkdtemp(prefix="loraocean-sandbox-"))
    cgroup = _new_pids_cgroup()
    try:
        (workdir / "program.py").write_text(script, encoding="utf-8")
        cmd = _namespace_prefix() + [sys.executable, "-I", "-S", "program.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: _limit(timeout, memory_mb, cgroup),
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, cgroup)
            proc.communicate()
            return TestResult(False, "timeout", f"stopped after {timeout:g} s")
        _kill(proc, cgroup)  # leftovers of a program that exited but left children
        tail = err.decode("utf-8", "replace")[-2000:]
        if proc.returncode == 0:
            return TestResult(True, "passed", tail)
        if proc.returncode < 0:
            tail += f"\nkilled by signal {-proc.returncode}"
        return TestResult(False, "failed", tail.strip())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroup is not None:
            _remove_cgroup(cgroup)


def _limit(timeout: float, memory_mb: int, cgroup: Path | None) -> None:
    """Runs in the child between fork and exec."""
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(timeout) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    size = MAX_FILE_MB * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    if os.geteuid() != 0:
        # Counts every process of this user, so allow the ones already running plus a few.
        limit = _user_processes() + MAX_PROCESSES
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def process_limit() -> bool:
    """Whether this machine caps the number of processes a program can start (RLIMIT_NPROC for a
    normal user, a writable pids cgroup for root); without it the timeout is the only stop."""
    return os.geteuid() != 0 or _cgroup_root() is not None


def _user_processes() -> int:
    uid = str(os.getuid())
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("Uid:"):
                    count += line.split()[1] == uid
                    break
    return count


@lru_cache(maxsize=1)
def _namespace_prefix() -> list[str]:
    """`unshare` into new user, network and PID namespaces when this kernel allows it."""
    cmd = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]
    if shutil.which("unshare") is None:
        return []
    try:
        ok = subprocess.run(cmd + ["true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return cmd if ok else []


_counter = itertools.count()


def _cgroup_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").is_file() and os.access(root, os.W_OK):
            control = root / "cgroup.subtree_control"
            if root.name == "pids" or (control.is_file() and "pids" in control.read_text()):
                return root
    return None


def _new_pids_cgroup() -> Path | None:
    """A fresh pids cgroup capped at MAX_PROCESSES, only when running as root (RLIMIT_NPROC does
    not apply to root) and the cgroup file system is writable; otherwise None."""
    if os.geteuid() != 0:
        return None
    root = _cgroup_root()
    if root is None:
        return None
    path = root / f"loraocean-sandbox-{os.getpid()}-{next(_counter)}"
    try:
        path.mkdir()
        (path / "pids.max").write_text(str(MAX_PROCESSES))
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _kill(proc: subprocess.Popen, cgroup: Path | None) -> None:
    """SIGKILL the program's process group and anything left in its cgroup."""
    for _ in range(50):
        pids = []
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        if cgroup is not None:
            with suppress(OSError):
                pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
            for pid in pids:
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(0.02)


def _remove_cgroup(path: Path) -> None:
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
