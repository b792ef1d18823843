"""Hostile and unlucky input of issue 28, each reproduction a test: names that would be paths,
scores that could be faked, floods and forks of model-written code, swapped library folders, task
files without a right answer, grids and examples without bounds, orphaned workers, full and
read-only disks, adapter configs that change with hashing, and numbers that break training.

Every fixture is written here (tmp_path): small BIG-bench-layout tasks of our own words and
tiny-llama adapters, so the file runs on a bare clone. CLI cases run `cli.main` in this process
(or a real subprocess where the reproduction was one) and hold the promise to users: exit status
2, one line on stderr starting with `error:`, no traceback, nothing changed outside the root
named.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loraocean.cli import main
from loraocean.errors import ConfigError, DataError, LoraOceanError, TrainingError
from loraocean.evaluation import code
from loraocean.library import Library
from loraocean.library.card import write_card

pytestmark = pytest.mark.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "amber"]


# --- fixtures of our own ---------------------------------------------------------------------

def task_file(folder: Path, n: int = 24, word: str = "lamp", **changes) -> str:
    """A choice task in BIG-bench's layout at `folder`; returns its `bigbench:` reference."""
    examples = [{"input": f"Sentence {i}: the {word} shines {COLOURS[i % 4]}. Which colour?",
                 "target_scores": {c: int(c == COLOURS[i % 4]) for c in COLOURS}} for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps({"name": folder.name, "description": "colours",
                                                  "examples": examples, **changes}))
    return f"bigbench:{folder}"


def adapter(folder: Path, model, task: str, seed: int = 0) -> Path:
    """A tiny-llama LoRA folder with a sealed card naming (tiny-llama, task)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(folder)
    peft.unload()
    write_card(folder, {"model": "tiny-llama", "task": task, "folder": f"tiny-llama/{task}",
                        "preset": {"name": "imported"}})
    return folder


def snapshot(*roots: Path) -> dict:
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def one_line_exit_2(argv: list[str], capsys, expect: str = "") -> str:
    """Run the CLI in this process; assert exit 2 and one `error:` line holding `expect`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err
    return err


def cli_process(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from loraocean.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llama):
    W = tmp_path_factory.mktemp("hostile")
    model, _ = tiny_llama
    adapter(W / "src", model, "bb_colours")
    task_file(W / "bb" / "colours")
    task_file(W / "bb" / "shapes", word="box")
    return W


# --- 1. names that become paths ----------------------------------------------------------------

@pytest.mark.parametrize("task", ["{V}", "../../x", "a/b", "a\u202eb", "..", ".", "x\ny", ".hidden", ""])
def test_a_task_name_never_leaves_the_library_root(task, world, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    root = tmp_path / "deep" / "lib"
    before = snapshot(tmp_path, world)
    one_line_exit_2(["library", "import", world / "src", "--model", "tiny-llama", "--task",
                     task.replace("{V}", str(victim)), "--root", root, "--overwrite"], capsys,
                    "cannot be used as a folder name")
    assert snapshot(tmp_path, world) == before  # the victim and everything else untouched


def test_the_victim_survives_a_real_cli_run(world, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    proc = cli_process("library", "import", world / "src", "--model", "tiny-llama", "--task", victim,
                       "--root", tmp_path / "lib", "--overwrite")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (victim / "precious.txt").read_text() == "keep me" and sorted(victim.iterdir()) == [victim / "precious.txt"]


def test_a_card_cannot_name_a_place_outside_the_root(world, tmp_path, tiny_llama):
    model, _ = tiny_llama
    for i, task in enumerate(["../../x", "a/b", "..", "y\u202e"]):
        src = adapter(tmp_path / f"src{i}", model, task)
        with pytest.raises(ConfigError, match="cannot be used as a folder name"):
            Library(tmp_path / "lib").add(src)
    assert not (tmp_path / "x").exists() and not (tmp_path / "lib").exists()
    # placed by hand in a folder of the same odd name, such a card is still refused, never listed as ok
    odd = adapter(tmp_path / "lib2" / "tiny-llama" / "y\u202e", model, "y\u202e")
    lib = Library(tmp_path / "lib2")
    lib.rebuild_manifest()
    report = lib.verify()
    assert not report.ok and len(report.misplaced) == 1 and "cannot be a folder name" in report.misplaced[0]
    with pytest.raises(LoraOceanError, match="cannot be a folder name"):
        Library.check(next(e for e in lib.list() if e.path == odd))


def test_paths_rule_and_links_out_of_the_root(tmp_path):
    from loraocean.models import slug
    from loraocean.paths import NAME, check_name, inside
    from loraocean.tasks import CATALOG

    assert all(NAME.fullmatch(name) for name in CATALOG)  # every catalog task is a valid name
    for bad in ["..", ".", "", "a/b", "/abs", "a\\b", "a\u202eb", "tab\there", "x" * 101, "-x", "_x"]:
        with pytest.raises(ConfigError):
            check_name(bad, "task")
    # model references may hold anything; their folder names never do
    for ref in ["..", ".", "", "/abs/models/..", "a\u202eb", "../../etc", "x" * 400, "org/Model-1B", "_x"]:
        assert NAME.fullmatch(slug(ref)), ref
    assert slug("org/Model-1B") == "org--Model-1B" and slug("x" * 400) != slug("x" * 399)
    # a link inside the root that leads out of it is refused
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "m").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match="leads outside"):
        inside(tmp_path / "root", "m", "t")
    assert inside(tmp_path / "root", "n", "t") == tmp_path / "root" / "n" / "t"


def test_names_from_studies_hub_maps_and_bigbench_folders(tmp_path, capsys):
    from loraocean.library.hub import check_repo_id, read_map
    from loraocean.tasks import get_task

    study = tmp_path / "s.yaml"
    study.write_text("name: \"a\\u202eb\"\nmodels: [tiny-llama]\ntasks: {targets: [bb_snarks]}\nmethods: [base]\n")
    one_line_exit_2(["run", study, "--dry-run"], capsys, "name")
    (tmp_path / "map.yaml").write_text("lora_a: ../../etc\n")
    with pytest.raises(DataError, match="cannot be a library folder name"):
        read_map(tmp_path / "map.yaml")
    for repo in ["../x", "a/b/c", "a", "a/..", "o/\u202e"]:
        with pytest.raises(ConfigError):
            check_repo_id(repo)
    assert check_repo_id("org/loras") == "org/loras"
    # a BIG-bench folder may have any name: it is a reference; the task's name is made safe
    ref = task_file(tmp_path / "my task \u202e\u00e9", n=12)
    assert get_task(ref).name == "bb_my_task___"


def test_overwrite_only_replaces_what_loraocean_wrote(world, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own work")
    before = snapshot(tmp_path)
    one_line_exit_2(["train", "--model", "tiny-llama", "--task", f"bigbench:{world}/bb/colours", "--out",
                     mine, "--preset", "smoke", "--overwrite"], capsys, "not a folder loraocean wrote")
    lib = tmp_path / "lib"
    Library(lib).add(world / "src")
    one_line_exit_2(["library", "export", "tiny-llama", "bb_colours", "--root", lib, "--out", mine,
                     "--overwrite"], capsys, "not a folder loraocean wrote")
    one_line_exit_2(["moe", "fit", "--method", "uniform", "--model", "tiny-llama", "--task",
                     f"bigbench:{world}/bb/colours", "--library", lib, "--experts", "bb_colours",
                     "--out", mine, "--preset", "smoke", "--overwrite"], capsys, "not a folder loraocean wrote")
    assert (mine / "notes.txt").read_text() == "my own work"
    # a folder loraocean wrote is replaced
    main_out = tmp_path / "exported"
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_:
            main(["library", "export", "tiny-llama", "bb_colours", "--root", str(lib), "--out", str(main_out),
                  "--overwrite"])
        assert exit_.value.code == 0
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith(str(mine))} == \
        {k: v for k, v in before.items() if k.startswith(str(mine))}


# --- 2. a score needs evidence -------------------------------------------------------------------

def sandbox_processes() -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += ("loraocean-sandbox-" in os.readlink(f"/proc/{entry.name}/cwd")
                          or "loraocean-sandbox-" in Path(f"/proc/{entry.name}/cgroup").read_text())
            except OSError:
                pass
    return count


@pytest.mark.parametrize("program,tests,entry", [
    ("import sys\nsys.exit(0)", "assert False", None),                      # the reproduction
    ("def f():\n    import os\n    os._exit(0)", "def check(g):\n    g()\n    assert False", "f"),
    ("raise SystemExit", "assert False", None),
    ("import atexit, os\natexit.register(lambda: os._exit(0))\nraise SystemExit(0)", "assert False", None),
    ("raise KeyboardInterrupt", "assert False", None),
    ("import os, threading, time\nthreading.Thread(target=lambda: os._exit(0)).start()\ntime.sleep(5)",
     "assert False", None),
    # a forged record: whatever it writes to every descriptor, it cannot know the token
    ("import posix\nfor fd in range(3, 64):\n    try:\n        posix.write(fd, b'0' * 32)\n"
     "    except OSError:\n        pass\nposix._exit(0)", "assert False", None),
    # reading its own program file finds no token either
    ("import posix\ntext = open('program.py').read()\nfor fd in range(3, 64):\n    try:\n"
     "        posix.write(fd, text[-32:].encode())\n    except OSError:\n        pass\nposix._exit(0)",
     "assert False", None),
])
def test_an_early_exit_never_passes(program, tests, entry):
    result = code.run_tests(program, tests, entry, timeout=10)
    assert not result.passed and result.status == "failed", result
    assert sandbox_processes() == 0


def test_the_same_programs_pass_when_their_tests_complete():
    assert code.run_tests("def f():\n    return 3", "def check(g):\n    assert g() == 3", "f").passed
    assert code.run_tests("print('hello')\nimport sys\nsys.stderr.write('note')", "assert True").passed


@pytest.mark.parametrize("program", [
    "import posix, time\nif posix.fork() == 0:\n    time.sleep(60)\n",                       # forks away
    "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(60)\n",   # and leaves its session
    "import posix, time\nif posix.fork() == 0:\n    if posix.fork() == 0:\n        time.sleep(60)\n"
    "    posix._exit(0)\nposix.wait()\n",                                                     # a grandchild
])
def test_a_program_that_forks_away_fails_and_is_killed(program):
    result = code.run_tests(program, "assert True", timeout=10)
    assert not result.passed and "still running" in result.detail + result.stdout, result
    deadline = time.time() + 10
    while sandbox_processes() and time.time() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == 0


def test_a_forked_copy_reaching_the_end_does_not_speak_for_the_run():
    # the parent exits at once; its child runs the tests and reaches the end
    program = "import posix, time\nif posix.fork() != 0:\n    posix._exit(0)\ntime.sleep(0.5)\n"
    assert not code.run_tests(program, "assert True", timeout=10).passed
    assert sandbox_processes() == 0


def test_output_is_capped_and_a_flood_fails():
    result = code.run_tests("import sys\nsys.stdout.write('A' * 5000 + 'Z' * 5000)\n"
                            "sys.stderr.write('first' + 'x' * 9000 + 'last')", "assert True")
    assert result.passed
    assert result.detail.startswith("first") and result.detail.endswith("last")
    assert "[... 6961 bytes left out ...]" in result.detail and len(result.detail) < 2 * code.OUTPUT_KEEP + 100
    assert result.stdout.startswith("A" * code.OUTPUT_KEEP) and result.stdout.endswith("Z" * code.OUTPUT_KEEP)
    start = time.time()
    flood = code.run_tests("import os\nwhile True:\n    os.write(2, b'y' * 65536)\n", "assert True", timeout=60)
    assert not flood.passed and f"more than {code.MAX_OUTPUT_MB} MiB" in flood.detail
    assert time.time() - start < 50  # stopped at the cap, not at the timeout
    assert sandbox_processes() == 0


def test_the_evaluators_memory_stays_bounded_under_a_gigabyte_flood():
    # A fresh process (its peak RSS is its own): 1 GiB to stdout and 1 GiB to stderr, with the
    # output cap raised so the whole flood is read. communicate() would have kept all of it.
    script = (
        "import json, resource\nfrom loraocean.evaluation import code\ncode.MAX_OUTPUT_MB = 4096\n"
        "assert code.run_tests('x = 1', 'assert x == 1').passed\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "flood = \"import os\\nb = b'x' * 65536\\nfor _ in range(16384):\\n    os.write(1, b)\\n    os.write(2, b)\\n\"\n"
        "r = code.run_tests(flood, 'assert True', timeout=300)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'before': before, 'after': after, 'passed': r.passed, 'detail': r.detail}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["passed"] and f"[... {2**30 - 2 * code.OUTPUT_KEEP} bytes left out ...]" in out["detail"]
    grown_mib = (out["after"] - out["before"]) / 1024  # ru_maxrss is in KiB on Linux
    assert grown_mib < 16, out  # the stated bound: about 2 x READ_CHUNK + 4 x OUTPUT_KEEP per program


# --- 3. a library entry binds its place ----------------------------------------------------------

@pytest.fixture(scope="module")
def swapped(world, tiny_llama, tmp_path_factory):
    """A library of two entries whose folders were swapped (bb_colours <-> bb_shapes)."""
    model, _ = tiny_llama
    root = tmp_path_factory.mktemp("swapped") / "lib"
    for i, task in enumerate(["bb_colours", "bb_shapes"]):
        adapter(root / "tiny-llama" / task, model, task, seed=i)
    lib = Library(root)
    lib.rebuild_manifest()
    assert lib.verify().clean
    a, b = root / "tiny-llama" / "bb_colours", root / "tiny-llama" / "bb_shapes"
    os.replace(a, root / "tmp")
    os.replace(b, a)
    os.replace(root / "tmp", b)
    return root


def test_verify_names_the_swapped_entries(swapped, capsys):
    report = Library(swapped).verify()
    assert not report.clean and len(report.misplaced) == 2 and not report.ok
    first = report.misplaced[0]
    assert first.startswith("tiny-llama/bb_colours:") and "adapter of tiny-llama / bb_shapes" in first
    proc = cli_process("library", "verify", "--root", swapped)  # the reproduction said "clean", exit 0
    assert proc.returncode == 1 and proc.stdout.count("misplaced:") == 2, proc.stdout + proc.stderr
    assert "belongs in tiny-llama/bb_shapes" in proc.stdout and "clean" not in proc.stdout
    proc = cli_process("library", "show", "tiny-llama", "bb_colours", "--root", swapped)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "adapter of tiny-llama / bb_shapes" in proc.stderr


def test_every_reader_refuses_a_swapped_entry(swapped, world, tmp_path, capsys):
    colours = f"bigbench:{world}/bb/colours"
    before = snapshot(swapped)
    expect = "adapter of tiny-llama / bb_shapes"
    one_line_exit_2(["library", "show", "tiny-llama", "bb_colours", "--root", swapped], capsys, expect)
    one_line_exit_2(["library", "export", "tiny-llama", "bb_colours", "--root", swapped, "--out",
                     tmp_path / "out"], capsys, expect)
    one_line_exit_2(["select", "--target", colours, "--k", "1", "--strategy", "random", "--model",
                     "tiny-llama", "--library", swapped, "--include-target"], capsys, "belongs in")
    one_line_exit_2(["moe", "fit", "--method", "uniform", "--model", "tiny-llama", "--task", colours,
                     "--library", swapped, "--experts", "bb_colours", "--out", tmp_path / "ckpt",
                     "--preset", "smoke"], capsys, expect)
    one_line_exit_2(["moe", "fit", "--method", "uniform", "--model", "tiny-llama", "--task", colours,
                     "--experts", swapped / "tiny-llama" / "bb_colours", "--out", tmp_path / "ckpt",
                     "--preset", "smoke"], capsys, expect)
    one_line_exit_2(["eval", "--model", "tiny-llama", "--task", colours, "--limit", "2", "--adapter",
                     swapped / "tiny-llama" / "bb_colours"], capsys, expect)
    assert snapshot(swapped) == before and not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def test_an_entry_in_its_own_place_is_used(world, tmp_path, capsys):
    lib = Library(tmp_path / "lib")
    entry = lib.add(world / "src")
    assert entry.card["folder"] == "tiny-llama/bb_colours" and lib.get("tiny-llama", "bb_colours").path == entry.path
    with pytest.raises(SystemExit) as exit_:
        main(["library", "show", "tiny-llama", "bb_colours", "--root", str(lib.root)])
    assert exit_.value.code == 0


# --- 4. task files make sense or are refused -----------------------------------------------------

def _bigbench_variants() -> dict[str, tuple[str, str]]:
    """name -> (task.json text, text the one error line names)."""
    def one(scores_text: str, extra: str = "") -> str:
        good = [f'{{"input": "q{i}", "target_scores": {{"a": 1, "b": 0}}}}' for i in range(5)]
        return '{"examples": [' + ", ".join(good) + f', {{"input": "q5"{extra}, "target_scores": {scores_text}}}]}}'
    return {
        "all_zero": (one('{"a": 0, "b": 0, "c": 0}'), "example 5: no choice has a score above 0"),
        "negative": (one('{"a": -1, "b": -2}'), "example 5: no choice has a score above 0"),
        "one_choice": (one('{"a": 1}'), "example 5 has 1 choice"),
        "duplicate_choice": (one('{"a": 0, "b": 1, "a": 1}'), "example 5's target_scores has the key 'a' twice"),
        "duplicate_field": (one('{"a": 1, "b": 0}', ', "input": "again"'), "example 5 has the key 'input' twice"),
        "duplicate_top": ('{"examples": [], "examples": [{"input": "x", "target": "y"}]}', "the key 'examples' twice"),
        "target_not_best": (one('{"a": 1, "b": 0}', ', "target": "b"'), "its target 'b' scores 0"),
        "nan_score": (one('{"a": NaN, "b": 1}'), "not a number"),
    }


@pytest.mark.parametrize("name", list(_bigbench_variants()))
def test_a_task_without_a_right_answer_is_refused(name, tmp_path, capsys):
    text, expect = _bigbench_variants()[name]
    (tmp_path / name).mkdir()
    (tmp_path / name / "task.json").write_text(text)
    one_line_exit_2(["tasks", "validate", tmp_path / name / "task.json"], capsys, expect)
    if name == "all_zero":  # the reproduction: it evaluated to accuracy 1.0
        one_line_exit_2(["eval", "--model", "tiny-llama", "--task", f"bigbench:{tmp_path / name}", "--limit", "2"],
                        capsys, "no choice has a score above 0")


def test_an_explaining_target_outside_the_choices_is_kept(tmp_path):
    # BIG-bench's strategyqa gives an explanation as `target` beside target_scores: not a choice
    from loraocean.tasks import get_task, load_split

    examples = [{"input": f"q{i}", "target": f"Yes. Because {i}.", "target_scores": {"Yes": 1, "No": 0}}
                for i in range(12)]
    (tmp_path / "why").mkdir()
    (tmp_path / "why" / "task.json").write_text(json.dumps({"examples": examples}))
    test = load_split(get_task(f"bigbench:{tmp_path / 'why'}"), "test")
    assert test and all(ex.choices == ["Yes", "No"] and ex.label == 0 for ex in test)


# --- 5. bounds -------------------------------------------------------------------------------------

def _grid_study(path: Path, seeds: int) -> Path:
    import yaml

    tasks = ["bb_snarks", "bb_winowhy", "bb_implicatures", "bb_anachronisms", "bb_intent_recognition",
             "bb_sports_understanding", "bb_social_iqa", "bb_epistemic_reasoning"]
    path.write_text(yaml.safe_dump({
        "name": "huge", "models": ["tiny-llama", "smollm2-135m"], "tasks": {"targets": tasks, "pool": tasks},
        "methods": ["base", "loramoe", "xlora", "mole", "arrow", "uniform"],
        "selection": {"strategies": ["random", "ppl", "manual"], "k": 2}, "seeds": list(range(seeds))}))
    return path


def test_job_counts_are_exact_without_building_the_jobs(tmp_path):
    from loraocean.study import expand, load_config
    from loraocean.study.jobs import estimate_seconds, size

    for study in sorted((ROOT / "studies").glob("*.yaml")):
        for quick in (False, True):
            try:
                cfg = load_config(study, quick=quick)
            except LoraOceanError:
                continue  # no quick: section
            jobs = expand(cfg)
            n, seconds = size(cfg)
            assert n == len(jobs) and seconds == pytest.approx(sum(estimate_seconds(j, cfg) for j in jobs))
    one, many = (load_config(_grid_study(tmp_path / f"g{s}.yaml", s)) for s in (1, 3))
    assert size(one)[0] == len(expand(one)) and size(many)[0] == len(expand(many))


def test_a_huge_grid_is_refused_at_once_with_its_count_and_estimate(tmp_path, capsys):
    from loraocean.study import load_config
    from loraocean.study.jobs import size

    path = _grid_study(tmp_path / "huge.yaml", 500)
    n, _ = size(load_config(path))
    assert n > 20_000
    start = time.time()
    proc = cli_process("run", path, "--dry-run", "--run-dir", tmp_path / "run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"expands to {n:,} jobs (estimated " in proc.stderr and f"--max-jobs {n}" in proc.stderr
    assert time.time() - start < 120 and not (tmp_path / "run").exists()
    # the flag raises the limit; a small limit refuses a small grid
    one_line_exit_2(["run", ROOT / "studies" / "ci.yaml", "--dry-run", "--max-jobs", "5"], capsys,
                    "more than the limit of 5")


def test_a_huge_example_is_clipped_by_rule_before_the_tokenizer(tiny_llama, monkeypatch):
    from loraocean import batching
    from loraocean.batching import CHARS_PER_TOKEN, clip, encode
    from loraocean.tasks.example import Example

    _, tok = tiny_llama
    long = "".join(f"word{i} " for i in range(60_000))  # ~590 KB
    ex = Example(id="x", task="t", instruction="Say it.", input=long, target="red")
    assert clip("abc" * 10, 1) == "abc" * 10 and len(clip("x" * (3 * CHARS_PER_TOKEN), 2)) == 2 * CHARS_PER_TOKEN
    assert clip("ab" + "x" * CHARS_PER_TOKEN, 1, keep="start").startswith("ab")
    clipped = encode(ex, tok, max_length=256)
    monkeypatch.setattr(batching, "CHARS_PER_TOKEN", 10**9)  # no clip: the whole text is tokenized
    whole = encode(ex, tok, max_length=256)
    assert len(clipped) == 256 and clipped == whole  # the same tokens: the clip only spared the tokenizer


@pytest.mark.real_model
def test_no_token_of_the_embedded_tokenizer_is_longer_than_the_clip_rule():
    from transformers import AutoTokenizer

    from loraocean.batching import CHARS_PER_TOKEN
    from loraocean.models import embedded

    tok = AutoTokenizer.from_pretrained(embedded.folder())
    longest = max(len(tok.convert_tokens_to_string([t])) for t in tok.get_vocab())
    assert longest <= CHARS_PER_TOKEN


def test_train_on_a_task_of_10_mb_lines_finishes(tmp_path):
    # The 100 MB line made the tokenizer abort the process (exit 134); ten 10 MB lines,
    # in every split, now train by rule (the prompt cut to the preset's budget before tokenizing).
    examples = [{"input": f"{i} " + "colour " * 1_500_000, "target_scores": {"red": 1, "blue": 0}}
                for i in range(10)]
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "task.json").write_text(json.dumps({"examples": examples}))
    proc = cli_process("train", "--model", "tiny-llama", "--task", f"bigbench:{tmp_path / 'huge'}",
                       "--out", tmp_path / "out", "--preset", "smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


# --- 6. no orphans ---------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_with_a_killed_build(tmp_path, world):
    proc = subprocess.Popen([sys.executable, "-c", "from loraocean.cli import main; main()", "library", "build",
                             "--models", "tiny-llama", "--tasks", f"bigbench:{world}/bb/colours,bigbench:{world}/bb/shapes",
                             "--root", str(tmp_path / "lib"), "--workers", "2", "--preset", "smoke"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, workers = time.time() + 300, []
        while time.time() < deadline:
            workers = [c for c in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the build did not start two workers"
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as an out-of-memory kill does
        proc.wait()
        deadline = time.time() + 30
        while any(_running(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_running(w) for w in workers)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# --- 7. full and read-only disks -------------------------------------------------------------------

def _small_study(tmp_path: Path, world: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(f"name: small\nmodels: [tiny-llama]\ntasks: {{targets: ['bigbench:{world}/bb/colours']}}\n"
                    "methods: [base]\nlibrary: {preset: smoke}\n"
                    "caps: {max_train: 8, max_train_steps: 2, max_eval: 4}\n")
    return path


FULL_DISK = """
import errno, os
from pathlib import Path
from loraocean import artifacts
real = artifacts.write_bytes_atomic
def full(path, data, *rest):  # the disk fills up while the progress file is written
    if Path(path).name == "progress.txt":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, data, *rest)
artifacts.write_bytes_atomic = full
from loraocean.cli import main
main()
"""


def test_a_full_disk_is_one_line_and_a_rerun_completes(tmp_path, world):
    study, run = _small_study(tmp_path, world), tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "run", str(study), "--run-dir", str(run), "--no-report"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot write ") and "progress.txt" in proc.stderr
    assert "the disk is full (ENOSPC)" in proc.stderr and "run the same command again" in proc.stderr
    done = sorted(p.name for p in (run / "jobs").iterdir() if not p.name.startswith("."))
    assert len(done) == 1  # the job that finished before the disk filled is kept
    proc = cli_process("run", study, "--run-dir", run, "--no-report")  # space again: it completes
    assert proc.returncode == 0 and "1 ran, 1 cached" in proc.stdout, proc.stdout + proc.stderr
    assert set(done) < {p.name for p in (run / "jobs").iterdir() if not p.name.startswith(".")}
    assert (run / "results.sqlite").is_file()


def _mount_namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", *([] if os.geteuid() == 0 else ["--user", "--map-root-user"]), "--mount", "true"],
        capture_output=True).returncode == 0


@pytest.mark.skipif(not _mount_namespaces(), reason="needs unshare with mount namespaces")
def test_report_of_a_read_only_run_folder_is_one_line(tmp_path, world):
    # A real read-only file system: the run folder bound read-only in a private mount namespace.
    study, run = _small_study(tmp_path, world), tmp_path / "run"
    assert cli_process("run", study, "--run-dir", run, "--no-report").returncode == 0
    before = snapshot(run)
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    cmd = (f'mount --bind "{run}" "{run}" && mount -o remount,bind,ro "{run}" && '
           f'exec "{sys.executable}" -c "from loraocean.cli import main; main()" report "{run}"')
    proc = subprocess.run(["unshare", *user, "--mount", "sh", "-c", cmd], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "read-only (EROFS)" in proc.stderr
    assert snapshot(run) == before
    proc = cli_process("report", run)  # writable again: it completes
    assert proc.returncode == 0 and (run / "report.md").is_file(), proc.stderr


# --- 8. same inputs, same bytes --------------------------------------------------------------------

def test_adapter_config_bytes_do_not_depend_on_string_hashing(tmp_path):
    script = ("import sys\nfrom peft import get_peft_model\nfrom loraocean.library.presets import PRESETS\n"
              "from loraocean.library.train import lora_config, write_adapter\nfrom loraocean.models import load\n"
              "model, _ = load('tiny-llama')\npeft = get_peft_model(model, lora_config(model, PRESETS['smoke']))\n"
              "write_adapter(peft, {'model': 'tiny-llama', 'task': 't'}, sys.argv[1])\n")
    configs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / seed)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        configs.append((tmp_path / seed / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1] == configs[2]
    modules = json.loads(configs[0])["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7


# --- 9. numbers that break training ----------------------------------------------------------------

def test_a_diverging_lora_stops_with_the_job_and_step(world, tmp_path, tiny_llama):
    from loraocean.library import get_preset, train_lora

    model, tok = tiny_llama
    hot = get_preset("smoke").with_train(lr=1e30)  # beyond the override ranges: only the API reaches it
    with pytest.raises(TrainingError, match=r"LoRA of tiny-llama on bb_colours: .* at step \d+") as err:
        train_lora("tiny-llama", f"bigbench:{world}/bb/colours", hot, out=tmp_path / "a", model=model, tokenizer=tok)
    assert str(err.value).count("\n") == 0
    assert not (tmp_path / "a").exists()


def test_a_weight_that_turns_non_finite_stops_training():
    from loraocean.batching import Encoded
    from loraocean.trainer import TrainConfig, train

    class Model(torch.nn.Module):  # its loss stays finite (1.0) whatever its weight becomes
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((2, 2), 3.4e38))

        def forward(self, input_ids, attention_mask, labels, use_cache=False):
            return type("Out", (), {"loss": (self.weight.clamp(-1, 1) * 0).sum() + 1.0})()

    model = Model()
    model.weight.register_hook(lambda g: torch.full_like(g, -1.0))
    data = [Encoded([1, 2, 3], [-100, 2, 3])] * 4
    cfg = TrainConfig(lr=1e37, batch_size=2, max_steps=3, warmup_ratio=0.0, answer_logits_only=False,
                      max_grad_norm=0.0)  # Adam's first step adds 1e37: 3.5e38 is inf in float32
    with pytest.raises(TrainingError, match="non-finite .* at step 1;"):
        train(model, data, cfg, pad_id=0)


def test_absurd_method_options_are_refused_by_their_ranges(world, tmp_path, capsys):
    from loraocean.moe.registry import MAX_OPTION, get_method

    for method, option in [("xlora", "global_scaling_weight"), ("xlora", "scaling_pass_value"),
                           ("loramoe", "alpha"), ("mole", "temperature"), ("lorahub", "bound")]:
        with pytest.raises(ConfigError, match=option):
            get_method(method).make_config({option: 1e38})
        assert get_method(method).make_config({option: 1.0})  # a sane value still works
    one_line_exit_2(["moe", "fit", "--method", "xlora", "--model", "tiny-llama", "--task",
                     f"bigbench:{world}/bb/colours", "--experts", world / "src", "--out", tmp_path / "c",
                     "--preset", "smoke", "--option", "global_scaling_weight=1.0e+38"], capsys,
                    f"between -{MAX_OPTION:g} and {MAX_OPTION:g}")
    one_line_exit_2(["moe", "fit", "--method", "loramoe", "--model", "tiny-llama", "--task",
                     f"bigbench:{world}/bb/colours", "--experts", world / "src", "--out", tmp_path / "c",
                     "--preset", "smoke", "--train", "lr=1.0e+38"], capsys, "at most 10")
    assert not (tmp_path / "c").exists()
