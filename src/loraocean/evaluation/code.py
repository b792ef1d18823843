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

A pass needs evidence: a small runner (`RUNNER`) reads a random token from the harness before any
of the program's code runs (then stdin is /dev/null), runs the program and its tests, and only
after the last one has returned writes the token to a pipe of its own. Any early exit
(`sys.exit(0)`, `os._exit(0)` in the entry point, a signal) leaves no token: a failure. So does a
process the program started that is still running when the tests end (it is killed), and a
forked copy of the program that reaches the end. The program's stdout and stderr are read into
bounded buffers (the first and last `OUTPUT_KEEP` bytes of each and a count), so the evaluator's
memory stays bounded whatever the program writes (about 2 x READ_CHUNK + 4 x OUTPUT_KEEP bytes per
running program); a program that writes more than MAX_OUTPUT_MB is stopped and fails.
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
import secrets
import selectors
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
MAX_OUTPUT_MB = 16      # output (stdout and stderr together) beyond which the program is stopped
OUTPUT_KEEP = 1024      # bytes kept from the start and from the end of its stdout and of its stderr
READ_CHUNK = 1 << 16    # bytes read from a pipe at once (the evaluator's other buffer per stream)
TOKEN_BYTES = 16        # the completion token (hex: twice as many characters)
RUNNER_FAILED = 97      # the runner's exit status when it saw the tests fail (it said why on stderr)
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


# Runs the program (`python -I -S -c RUNNER FD`): reads the harness's token from stdin before any
# program code runs, then runs program.py and writes the token to the pipe FD only after the last
# test returned, from the process it started in, with no process of the program left running.
RUNNER = r'''
import posix, sys
def _loraocean_runner():
    record, me = int(sys.argv[1]), posix.getpid()
    write, exit_, waitpid, WNOHANG = posix.write, posix._exit, posix.waitpid, posix.WNOHANG
    token = b""
    while len(token) < 2 * TOKEN_BYTES:
        chunk = posix.read(0, 2 * TOKEN_BYTES - len(token))
        if not chunk:
            break
        token += chunk
    null = posix.open("/dev/null", posix.O_RDONLY)
    posix.dup2(null, 0)
    posix.close(null)
    try:  # orphans of the program become our children, so the check below sees them (Linux)
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    def fail(message):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        try:
            write(2, ("\n" + message + "\n").encode())
        except OSError:
            pass
        exit_(RUNNER_FAILED)
    sys.argv = ["program.py"]
    try:
        with open("program.py", encoding="utf-8") as fh:
            code = compile(fh.read(), "program.py", "exec")
        exec(code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})
    except SystemExit as stop:
        fail(f"the program exited (SystemExit {stop.code!r}) before its tests completed")
    except BaseException:
        import traceback
        try:
            traceback.print_exc()
        except BaseException:
            pass
        fail("the tests did not complete")
    if posix.getpid() != me:
        exit_(1)  # a forked copy of the program reached the end: it does not speak for the run
    try:
        while True:
            pid, _ = waitpid(-1, WNOHANG)
            if pid == 0:
                fail("a process the program started was still running when its tests ended")
    except ChildProcessError:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        write(record, token)
    except OSError:
        exit_(1)
    exit_(0)
_loraocean_runner()
'''.replace("TOKEN_BYTES", str(TOKEN_BYTES)).replace("RUNNER_FAILED", str(RUNNER_FAILED))


@dataclass(frozen=True)
class TestResult:
    passed: bool
    status: str  # "passed", "failed" (an assertion, an error, an early exit), "timeout"
    detail: str = ""  # stderr (first and last OUTPUT_KEEP bytes) and why it failed or was stopped
    stdout: str = ""  # stdout, kept the same way


class Capped:
    """The first and last `keep` bytes of a stream, and how many bytes it had: bounded memory
    whatever the writer sends."""

    def __init__(self, keep: int = OUTPUT_KEEP):
        self.keep, self.total = keep, 0
        self.head, self.tail = bytearray(), bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data[-self.keep:])[-self.keep:]

    def text(self) -> str:
        left_out = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {left_out} bytes left out ...]\n".encode() if left_out > 0 else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")


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
    entry point is given) in the sandbox. Passed = the runner reported, within `timeout` seconds,
    that every test returned (see `RUNNER`) and the program then exited with status 0."""
    script = PREAMBLE + "\n" + program + "\n\n" + tests + "\n"
    if entry_point:
        script += f"\ncheck({entry_point})\n"
    jailed = _use_jail()
    workdir = Path(tempfile.mkdtemp(prefix="loraocean-sandbox-"))
    cgroups = _new_cgroups(memory_mb)
    token = secrets.token_hex(TOKEN_BYTES).encode()
    prctl = _prctl()
    record_r, record_w = os.pipe()
    proc = None
    try:
        (workdir / "program.py").write_text(script, encoding="utf-8")
        argv = ["-I", "-S", "-c", RUNNER, str(record_w)]
        cmd = _jail_command(workdir, [_real_python(), *argv]) if jailed else [sys.executable, *argv]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(record_w,), start_new_session=True,
            preexec_fn=lambda: _limit(timeout, memory_mb, cgroups, jailed, prctl),
        )
        os.close(record_w)
        record_w = -1
        try:
            proc.stdin.write(token)
            proc.stdin.close()
        except OSError:
            pass  # it died at once; what it wrote says why
        out, err, record = Capped(), Capped(), Capped(keep=4 * TOKEN_BYTES)
        ended = _drain(proc, {proc.stdout.fileno(): out, proc.stderr.fileno(): err, record_r: record},
                       timeout)
        _kill(proc, cgroups)  # everything left: leftovers of a program that exited, or all of it
        proc.wait()
        detail, stdout = err.text(), out.text()
        if ended == "timeout":
            return TestResult(False, "timeout", _join(detail, f"stopped after {timeout:g} s"), stdout)
        if ended == "flooded":
            return TestResult(False, "failed", _join(detail, f"stopped after writing more than "
                                                     f"{MAX_OUTPUT_MB} MiB of output"), stdout)
        if ended == "lingering":
            return TestResult(False, "failed", _join(detail, "a process the program started kept running "
                                                     "after it exited; it was killed"), stdout)
        done = record.total == len(token) and bytes(record.head) == token
        if done and proc.returncode == 0:
            return TestResult(True, "passed", detail, stdout)
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}"
        elif proc.returncode == RUNNER_FAILED:
            why = ""  # the runner said why
        elif not done:
            why = f"the program ended before its tests completed (exit status {proc.returncode})"
        else:
            why = f"exit status {proc.returncode} after the tests completed"
        return TestResult(False, "failed", _join(detail, why), stdout)
    finally:
        for fd in (record_r, record_w):
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                with suppress(OSError):
                    pipe.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for path in cgroups:
            _remove_cgroup(path)


def _join(detail: str, why: str) -> str:
    detail = detail.strip()
    return f"{detail}\n{why}" if detail and why else detail or why


def _drain(proc: subprocess.Popen, sinks: dict[int, Capped], timeout: float,
           grace: float = 1.0) -> str:
    """Read every pipe in `sinks` into its buffer until all are closed: "ended"; "timeout" when
    `timeout` seconds pass first; "flooded" when more than MAX_OUTPUT_MB came; "lingering" when
    the program exited but something it started still holds a pipe `grace` seconds later."""
    selector = selectors.DefaultSelector()
    for fd in sinks:
        selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    exited_at = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > grace:
                return "lingering"
            for key, _ in selector.select(min(deadline - now, 0.2)):
                try:
                    data = os.read(key.fd, READ_CHUNK)
                except OSError:
                    data = b""
                if data:
                    sinks[key.fd].add(data)
                    if sum(sink.total for sink in sinks.values()) > MAX_OUTPUT_MB * 2**20:
                        return "flooded"
                else:
                    selector.unregister(key.fd)
        return "ended"
    finally:
        selector.close()


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


@lru_cache(maxsize=1)
def _prctl():
    """libc's prctl (Linux), looked up in the parent: the child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _limit(timeout: float, memory_mb: int, cgroups: list[Path], jailed: bool,
           prctl=None) -> None:
    """Runs in the child between fork and exec."""
    if prctl is not None:  # PR_SET_PDEATHSIG: the program dies with the evaluator (no orphans)
        prctl(1, signal.SIGKILL, 0, 0, 0)
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
