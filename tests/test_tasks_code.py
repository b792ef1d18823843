"""The code sandbox that scores HumanEval / MBPP (pass@1): the canonical solutions pass, wrong
ones fail, and hostile programs are stopped by the limits without harming the run."""

from __future__ import annotations

import os
from pathlib import Path

from loraocean.tasks import code, get_task
from loraocean.tasks.load import _all_splits


def humaneval_examples():
    splits = _all_splits(get_task("humaneval"))
    return [ex for s in ("train", "dev", "test") for ex in splits[s]]


def sandbox_processes() -> int:
    """Processes still running a sandboxed program (their cwd is a sandbox temp folder)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += "loraocean-sandbox-" in os.readlink(f"/proc/{entry.name}/cwd")
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
