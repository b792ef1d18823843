"""Running model-written code against unit tests (HumanEval, MBPP pass@1), in a jail.

Nothing here runs generated code in our own process. Each program runs in a fresh `python -I -S`
subprocess inside a jail built from Linux namespaces (`unshare` from util-linux); docs/sandbox.md
gives the threat model and what holds where. The layers:
- a private mount namespace whose root is a new read-only tree holding only the system folders
  (/usr, /lib, /bin, ...) and the Python installation, bound read-only; the program's working
  folder is a size- and inode-limited tmpfs (WORK_MB, WORK_FILES), the only writable place. The
  host's home, /tmp, /run (and its Unix sockets), the evaluator's files and $LORAOCEAN_HOME are
  not in the tree at all;
- new network (no interfaces, and abstract Unix sockets are per network namespace), PID and IPC
  namespaces, so the program sees no host process, socket or shared memory, and all of its
  processes die with it;
- an unprivileged user: started as root, the program runs as nobody (65534) with no
  capabilities; started as a normal user, the namespaces are a user namespace of that user, with
  every capability dropped before the program starts;
- cgroups (when the cgroup file system is writable): `memory` caps the memory of all of the
  program's processes together at MEMORY_MB, `pids` their number at MAX_PROCESSES. Without them,
  RLIMIT_NPROC (per user) and RLIMIT_AS (per process) bound the total at MEMORY_MB x MAX_PROCESSES;
- rlimits on every process: address space, CPU seconds, file size, open files, no core dumps;
- a wall-clock timeout, then SIGKILL of everything;
- a preamble that disables sockets and process creation from Python (easy to bypass through
  `_socket`, `posix.fork` or ctypes; the layers above are what hold).
A machine that does not allow the namespaces fails closed with `SandboxError`;
LORAOCEAN_SANDBOX=weak runs without the jail (rlimits, cgroups and the preamble only), for
machines where the user accepts that.

Public API: `run_tests(program, tests, entry_point, timeout)`, `check(example, completion)`,
`run_many(jobs)`, `program_for(example, completion)`, `process_limit()`, `memory_limit()`,
`jail_available()`.
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

from loraocean.errors import LoraOceanError
from loraocean.tasks.example import Example
from loraocean.tasks.extract import code_block

MAX_PROCESSES = 32      # processes the program may have at once (itself included)
MEMORY_MB = 1024        # memory of all its processes together (cgroup), and of each (RLIMIT_AS)
MAX_FILE_MB = 16        # largest file the program may write
WORK_MB = 64            # size of its writable working folder (a tmpfs in the jail)
WORK_FILES = 1024       # files and folders it may create there
NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")

# Runs as root of the new mount namespace: builds the jail's root in $1/root and starts $3 (a
# setpriv command that drops the user and every capability, then execs Python) in it. $2: the
# options of the program's writable tmpfs, which appears at the path of its host folder $1.
# $4: the chroot program; $5...: folders bound read-only.
JAIL = r'''set -eu
work=$1; tmpfs=$2; run=$3; chroot=$4; shift 4
new="$work/root"
mount --make-rprivate /
mkdir "$new"
mount -t tmpfs -o size=1m,mode=755 jail "$new"
for d in "$@"; do
  [ -e "$d" ] || continue
  if [ -L "$d" ]; then mkdir -p "$new$(dirname "$d")"; cp -P "$d" "$new$d"; continue; fi
  mkdir -p "$new$d"
  mount --rbind "$d" "$new$d"
  mount -o remount,bind,ro,nosuid,nodev "$new$d"
done
mkdir -p "$new/dev" "$new$work"
for n in null zero urandom random; do
  touch "$new/dev/$n"
  mount --bind "/dev/$n" "$new/dev/$n"
done
mount -t tmpfs -o "$tmpfs" work "$new$work"
cp "$work/program.py" "$new$work/program.py"
chmod 644 "$new$work/program.py"
mount -o remount,bind,ro "$new"
exec "$chroot" "$new" /bin/sh -c "cd '$work' && exec $run"
'''

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
    jailed = _use_jail()
    workdir = Path(tempfile.mkdtemp(prefix="loraocean-sandbox-"))
    cgroups = _new_cgroups(memory_mb)
    try:
        (workdir / "program.py").write_text(script, encoding="utf-8")
        if jailed:
            cmd = _jail_command(workdir, [_real_python(), "-I", "-S", "program.py"])
        else:
            cmd = [sys.executable, "-I", "-S", "program.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: _limit(timeout, memory_mb, cgroups, jailed),
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, cgroups)
            proc.communicate()
            return TestResult(False, "timeout", f"stopped after {timeout:g} s")
        _kill(proc, cgroups)  # leftovers of a program that exited but left children
        tail = err.decode("utf-8", "replace")[-2000:]
        if proc.returncode == 0:
            return TestResult(True, "passed", tail)
        if proc.returncode < 0:
            tail += f"\nkilled by signal {-proc.returncode}"
        return TestResult(False, "failed", tail.strip())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for path in cgroups:
            _remove_cgroup(path)


class SandboxError(LoraOceanError):
    """This machine cannot build the jail for model-written code."""


def _use_jail() -> bool:
    """True to jail the program; False in LORAOCEAN_SANDBOX=weak mode; SandboxError when the jail
    is needed but this machine does not allow it (fail closed)."""
    mode = os.environ.get("LORAOCEAN_SANDBOX", "jail")
    if mode not in ("jail", "weak"):
        raise SandboxError(f"LORAOCEAN_SANDBOX={mode!r} is unknown; use jail (the default) or weak")
    if mode == "weak":
        return False
    problem = _jail_problem()
    if problem:
        raise SandboxError(f"cannot jail model-written code on this machine ({problem}); run where "
                           "unshare can create mount, network and PID namespaces (see docs/sandbox.md), "
                           "or set LORAOCEAN_SANDBOX=weak to run it with resource limits only")
    return True


def jail_available() -> bool:
    return not _jail_problem()


@lru_cache(maxsize=1)
def _jail_problem() -> str:
    """Why the jail cannot be built here ('' when it can): a trial run of the jail itself."""
    for tool in ("unshare", "setpriv", "chroot", "mount"):
        if _tool(tool) == tool:
            return f"`{tool}` (util-linux / coreutils) is not installed"
    with tempfile.TemporaryDirectory(prefix="loraocean-sandbox-") as tmp:
        Path(tmp, "program.py").write_text("", encoding="utf-8")
        try:
            run = subprocess.run(_jail_command(Path(tmp), [_real_python(), "-I", "-S", "program.py"]),
                                 cwd=tmp, env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            return str(err)
    if run.returncode != 0:
        return run.stderr.decode("utf-8", "replace").strip().splitlines()[-1:][0] if run.stderr else \
            f"exit status {run.returncode}"
    return ""


def _real_python() -> str:
    """The interpreter itself (a virtual environment's python is a link to it)."""
    return os.path.realpath(sys.executable)


def _jail_command(workdir: Path, argv: list[str]) -> list[str]:
    import shlex

    root = os.geteuid() == 0
    user = ["--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"] if root else []
    run = [_tool("setpriv"), *user, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", *argv]
    namespaces = [_tool("unshare"), *([] if root else ["--user", "--map-root-user"]),
                  "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    tmpfs = f"size={WORK_MB}m,nr_inodes={WORK_FILES},mode=1777,nosuid,nodev"
    python_dirs = {sys.base_prefix, os.path.dirname(os.path.dirname(_real_python()))}
    return [*namespaces, "/bin/sh", "-c", JAIL, "jail", str(workdir), tmpfs, shlex.join(run),
            _tool("chroot"), *SYSTEM_DIRS, *sorted(python_dirs)]


def _tool(name: str) -> str:
    """Absolute path of a system tool (the program's PATH is minimal)."""
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or name


def _limit(timeout: float, memory_mb: int, cgroups: list[Path], jailed: bool) -> None:
    """Runs in the child between fork and exec."""
    for path in cgroups:
        (path / "cgroup.procs").write_text(str(os.getpid()))
    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(timeout) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    size = MAX_FILE_MB * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    uid = NOBODY if jailed and os.geteuid() == 0 else os.getuid()
    if uid != 0:
        # Counts every process of this user, so allow the ones already running plus a few.
        limit = _user_processes(uid) + MAX_PROCESSES
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def process_limit() -> bool:
    """Whether this machine caps the number of processes a program can start (RLIMIT_NPROC for a
    program that does not run as root, or a writable pids cgroup)."""
    return os.geteuid() != 0 or _use_jail() or any(f == "pids.max" for _, limits in _hierarchies(1)
                                                     for f, _ in limits)


def memory_limit() -> bool:
    """Whether the memory of all of a program's processes together is capped (a memory cgroup);
    otherwise only each process is (RLIMIT_AS), and their number."""
    return any(f.startswith("memory.") for _, limits in _hierarchies(1) for f, _ in limits)


def _user_processes(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("Uid:"):
                    count += line.split()[1] == str(uid)
                    break
    return count


_counter = itertools.count()


def _hierarchies(memory_mb: int) -> list[tuple[Path, list[tuple[str, int]]]]:
    """Writable cgroup hierarchies and the limit files to write in a new group of each: cgroup v2
    (one hierarchy) or v1 (`pids` and `memory` hierarchies)."""
    if os.geteuid() != 0:
        return []
    mem = memory_mb * 2**20
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.subtree_control").is_file():
        enabled = (v2 / "cgroup.subtree_control").read_text().split()
        limits = ([("pids.max", MAX_PROCESSES)] if "pids" in enabled else []) + \
            ([("memory.max", mem), ("memory.swap.max", 0)] if "memory" in enabled else [])
        return [(v2, limits)] if limits and os.access(v2, os.W_OK) else []
    out = []
    for name, limits in (("pids", [("pids.max", MAX_PROCESSES)]),
                         ("memory", [("memory.limit_in_bytes", mem), ("memory.memsw.limit_in_bytes", mem)])):
        if (v2 / name / "cgroup.procs").is_file() and os.access(v2 / name, os.W_OK):
            out.append((v2 / name, limits))
    return out


def _new_cgroups(memory_mb: int) -> list[Path]:
    """A fresh cgroup in each writable hierarchy, with its limits written (a limit file this kernel
    lacks, e.g. memsw without swap accounting, is skipped); none when not root."""
    out = []
    for root, limits in _hierarchies(memory_mb):
        path = root / f"loraocean-sandbox-{os.getpid()}-{next(_counter)}"
        try:
            path.mkdir()
            for name, value in limits:
                if (path / name).exists():
                    (path / name).write_text(str(value))
        except OSError:
            _remove_cgroup(path)
            continue
        out.append(path)
    return out


def _kill(proc: subprocess.Popen, cgroups: list[Path]) -> None:
    """SIGKILL the program's process group and anything left in its cgroups."""
    for _ in range(50):
        pids = []
        with suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        for path in cgroups:
            with suppress(OSError):
                pids += [int(p) for p in (path / "cgroup.procs").read_text().split()]
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
