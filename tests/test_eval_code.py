"""The code sandbox that scores HumanEval / MBPP (pass@1): the canonical solutions pass, wrong
ones fail, and hostile programs are stopped by the limits without harming the run."""

from __future__ import annotations

import os
from pathlib import Path

from loraocean.evaluation import code
from loraocean.tasks import get_task
from loraocean.tasks.load import _all_splits


def humaneval_examples():
    splits = _all_splits(get_task("humaneval"))
    return [ex for s in ("train", "dev", "test") for ex in splits[s]]


def sandbox_processes() -> int:
    """Processes still running a sandboxed program (their cwd is a sandbox temp folder, or they
    are in a sandbox cgroup)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:  # jailed processes show in their cgroups, the others by their folder
                count += ("loraocean-sandbox-" in os.readlink(f"/proc/{entry.name}/cwd")
                          or "loraocean-sandbox-" in Path(f"/proc/{entry.name}/cgroup").read_text())
            except OSError:
                pass
    return count


def test_all_164_canonical_solutions_pass():
    examples = humaneval_examples()
    assert len(examples) == 164
    jobs = [(code.program_for(ex, ex.target), ex.metadata["tests"], ex.metadata["entry_point"])
            for ex in examples]
    results = code.run_many(jobs, timeout=20, workers=4)
    failed = [(ex.metadata["source_id"], r.detail[-200:]) for ex, r in zip(examples, results, strict=True)
              if not r.passed]
    assert failed == []
    assert {r.status for r in results} == {"passed"}


def test_wrong_solution_fails_with_the_assertion():
    ex = next(e for e in humaneval_examples() if e.metadata["entry_point"] == "has_close_elements")
    result = code.check(ex, "    return False\n")
    assert not result.passed and result.status == "failed" and "AssertionError" in result.detail


def test_chat_style_fenced_whole_function_is_accepted():
    ex = next(e for e in humaneval_examples() if e.metadata["entry_point"] == "has_close_elements")
    body = ex.target
    answer = ("Here is the function:\n```python\ndef has_close_elements(numbers, threshold):\n"
              + body + "```\nIt compares every pair.")
    program = code.program_for(ex, answer)
    assert program.startswith("from typing import List\n") and program.count("def has_close") == 1
    assert code.check(ex, answer).passed


def test_mbpp_style_asserts_with_setup_code():
    tests = "OFFSET = 10\nassert shifted(1) == 11"
    assert code.run_tests("def shifted(x):\n    return x + OFFSET", tests).passed
    assert not code.run_tests("def shifted(x):\n    return x", tests).passed


def test_infinite_loop_is_stopped_and_the_next_run_works():
    result = code.run_tests("def f():\n    while True:\n        pass\n", "f()", timeout=1)
    assert result.status == "timeout" and not result.passed
    assert code.run_tests("x = 1", "assert x == 1", timeout=5).passed
    assert sandbox_processes() == 0


def test_fork_bombs_are_stopped_without_leftovers():
    # From Python, process creation is switched off outright.
    py = code.run_tests("import os\nwhile True:\n    os.fork()\n", "", timeout=3)
    assert py.status == "failed" and "disabled in the LoRAOcean code sandbox" in py.detail
    # Through libc (bypassing the Python guard), the process limit holds: count the forks that
    # succeed, keeping every child alive so they add up.
    bomb = ("import ctypes, sys, time\nlibc = ctypes.CDLL(None)\nok = 0\n"
            "for _ in range(300):\n    pid = libc.fork()\n    if pid == 0:\n"
            "        time.sleep(60)\n        libc._exit(0)\n    ok += pid > 0\n"
            "sys.stderr.write(f'forks={ok}')\nsys.exit(1)\n")
    result = code.run_tests(bomb, "", timeout=5)
    assert not result.passed
    if code.process_limit():  # RLIMIT_NPROC (a normal user) or a pids cgroup (root)
        forks = int(result.detail.split("forks=")[1].split()[0])
        assert forks < code.MAX_PROCESSES
    else:
        assert result.status in ("failed", "timeout")
    assert sandbox_processes() == 0
    assert code.run_tests("x = 2", "assert x == 2").passed


def test_no_network_memory_limit_and_a_private_temp_folder():
    net = code.run_tests("import _socket\ns = _socket.socket()\ns.settimeout(3)\n"
                         "s.connect(('1.1.1.1', 80))\n", "", timeout=10)
    assert not net.passed and "Error" in net.detail
    mem = code.run_tests("x = bytearray(4 * 1024 ** 3)\n", "", timeout=10)
    assert not mem.passed and "MemoryError" in mem.detail
    where = code.run_tests("import os, sys\nopen('out.txt', 'w').write('x')\n"
                           "sys.stderr.write(os.getcwd())\nsys.exit(1)\n", "")
    folder = Path(where.detail.strip())
    assert folder.name.startswith("loraocean-sandbox-") and not folder.exists()


# --- the jail: what a hostile program tries beyond the Python guard ---------------------------

def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_program_cannot_write_outside_its_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("evaluator data")
    monkeypatch.setenv("LORAOCEAN_HOME", str(home))
    own_source = Path(code.__file__)
    before = {p: _digest(p) for p in (own_source, home / "keep.txt")}
    targets = [own_source, home / "keep.txt", home / "new.txt", Path("/tmp/loraocean-escape.txt"),
               tmp_path / "escape.txt"]
    program = ("import sys\nwrote = []\n"
               f"for path in {[str(t) for t in targets]!r}:\n"
               "    try:\n        open(path, 'a').write('x')\n        wrote.append(path)\n"
               "    except OSError:\n        pass\n"
               "sys.stderr.write(f'wrote={wrote}')\n")
    result = code.run_tests(program, "assert wrote", timeout=10)  # passes if any write got through
    assert result.detail.startswith("wrote=[]") and not result.passed
    assert {p: _digest(p) for p in before} == before
    assert not (home / "new.txt").exists() and not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/loraocean-escape.txt").exists()


def test_a_program_cannot_fill_the_disk(tmp_path):
    # 100 files of 1 MiB each (every one under the per-file limit): the folder's quota stops them
    program = ("import sys\nn = 0\ntry:\n    for i in range(100):\n"
               "        open(f'f{i}', 'wb').write(b'x' * 2**20)\n        n += 1\n"
               "finally:\n    sys.stderr.write(f'files={n}\\n')\n")
    result = code.run_tests(program, "", timeout=20)
    assert not result.passed
    assert int(result.detail.split("files=")[1].split()[0]) <= code.WORK_MB


def test_a_program_cannot_reach_a_host_unix_socket(tmp_path):
    import socket

    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0loraocean-test-{os.getpid()}")
    for s in (server, abstract):
        s.listen(4)
        s.setblocking(False)
    try:
        program = ("import _socket, sys\nreached = []\n"
                   f"for address in ({str(path)!r}, '\\0loraocean-test-{os.getpid()}'):\n"
                   "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
                   "    try:\n        s.connect(address)\n        reached.append(address)\n"
                   "    except OSError as err:\n        sys.stderr.write(f'{err!r}\\n')\n")
        result = code.run_tests(program, "assert reached", timeout=10)  # passes if one connected
        assert not result.passed and result.detail.count("Error(") == 2  # both connects failed
        for s in (server, abstract):
            try:
                s.accept()
                raise AssertionError("the sandboxed program connected to a host socket")
            except BlockingIOError:
                pass
    finally:
        server.close()
        abstract.close()


def test_memory_spread_over_children_is_capped_in_total():
    # With a 256 MiB cap: four children of 100 MiB each (each under the per-process limit, 400 MiB
    # together), made through posix.fork, which the Python guard does not cover.
    program = ("import posix, sys, time\nr, w = posix.pipe()\nkids = []\n"
               "for _ in range(4):\n    pid = posix.fork()\n    if pid == 0:\n"
               "        block = bytearray(100 * 2**20)\n"
               "        for i in range(0, len(block), 4096):\n            block[i] = 1\n"
               "        posix.write(w, b'k')\n        time.sleep(30)\n        posix._exit(0)\n"
               "    kids.append(pid)\n"
               "held = 0\ndeadline = time.time() + 12\nposix.set_blocking(r, False)\n"
               "while held < 4 and time.time() < deadline:\n"
               "    try:\n        held += len(posix.read(r, 4))\n    except BlockingIOError:\n"
               "        time.sleep(0.05)\n"
               "alive = sum(posix.waitpid(pid, posix.WNOHANG) == (0, 0) for pid in kids)\n"
               "sys.stderr.write(f'alive={alive}\\n')\n"
               "for pid in kids:\n    try:\n        posix.kill(pid, 9)\n        posix.waitpid(pid, 0)\n"
               "    except OSError:\n        pass\n")
    result = code.run_tests(program, "assert alive == 4", timeout=20, memory_mb=256)
    assert not result.passed  # (without the cgroup and the jail this program passes: 4 alive)
    if code.memory_limit():  # a memory cgroup: at most two 100 MiB children fit in 256 MiB
        alive = int(result.detail.split("alive=")[1].split()[0]) if "alive=" in result.detail else 0
        assert alive <= 2
    else:  # the documented weaker bound: each process 256 MiB, at most MAX_PROCESSES of them
        assert code.process_limit()
    assert sandbox_processes() == 0


def test_without_namespaces_the_sandbox_fails_closed(monkeypatch):
    code._jail_problem.cache_clear()
    monkeypatch.setattr(code, "_tool", lambda name: name)  # as if util-linux were missing
    try:
        import pytest

        from loraocean.errors import LoraOceanError

        with pytest.raises(LoraOceanError, match="LORAOCEAN_SANDBOX=weak"):
            code.run_tests("x = 1", "assert x == 1")
        monkeypatch.setenv("LORAOCEAN_SANDBOX", "weak")
        assert code.run_tests("x = 1", "assert x == 1").passed
    finally:
        code._jail_problem.cache_clear()
