"""One check for whoever has a GPU (and, with the tiny shape, for CI on a CPU): device-sensitive
tests, the end-to-end command line on a randomly initialised model of a real shape, every bench;
then one table.

    python bench/gpu_check.py                                  # cuda when there is one, tiny shape
    python bench/gpu_check.py --device cuda --shape llama-1b   # a random Llama-3.2-1B-shaped model
    python bench/gpu_check.py --device cpu --shape tiny        # what CI runs (a few minutes)

1. tests: the suite's device-sensitive files with LORAOCEAN_TEST_DEVICE=DEVICE (every tiny model
   and test input on it, bf16 tolerances on a GPU).
2. end to end, as a user types it: `library build` of 4 BIG-bench tasks (smoke preset), `select`,
   `moe fit` of loramoe, xlora and rocket, `eval` of each checkpoint, on the `--shape` model
   (saved once as a normal Hugging Face folder with the embedded model's tokenizer; no download).
3. every bench script with `--device DEVICE --shape SHAPE` and its quick settings.

Each step runs in its own process; the table gives its status, seconds and a one-line note (the
pytest summary, the eval accuracy, a bench's last line). Exits 1 when any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHAPES, shaped_model, use_shared_bigbench

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["test_moe_layer.py", "test_moe_methods.py", "test_moe_xlora.py", "test_moe_baselines.py",
         "test_moe_registry.py", "test_architectures.py", "test_train_loop.py", "test_train.py",
         "test_select.py", "test_eval_scoring.py", "test_eval_moe.py", "test_eval_cli.py",
         "test_eval_lm_eval.py", "test_core_models.py"]
TASKS = ["bb_intent_recognition", "bb_sports_understanding", "bb_implicatures", "bb_snarks"]
TARGET = TASKS[-1]
METHODS = ["loramoe", "xlora", "rocket"]
BENCHES = {"train_throughput": ["--steps", "2", "--repeats", "1", "--preset", "smoke"],
           "moe_overhead": ["--quick"],
           "select_speed": ["--loras", "4", "--shots", "8"],
           "eval_speed": ["--limit", "8", "--batch-size", "8"]}


def run(cmd: list[str], env: dict, note=None) -> tuple[str, float, str]:
    """(status, seconds, note) of one command; the note is `note(stdout)` or its last line."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        err = [line for line in proc.stderr.splitlines() if line.strip()] or lines
        return "FAILED", seconds, (err[-1] if err else f"exit {proc.returncode}")[:160]
    return "ok", seconds, (note(proc.stdout) if note else (lines[-1] if lines else ""))[:160]


def cli(*args: str) -> list[str]:
    """The `loraocean` command of this interpreter (the package has no __main__)."""
    return [sys.executable, "-c", "from loraocean.cli import main; main()", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: tests, cli, bench")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    use_shared_bigbench()

    from loraocean.models import default_device

    device = args.device or default_device()
    env = dict(os.environ, LORAOCEAN_DEVICE=device, LORAOCEAN_TEST_DEVICE=device,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    os.environ["LORAOCEAN_DEVICE"] = device
    rows: list[tuple[str, str, float, str]] = []

    def step(name, cmd, note=None):
        status, seconds, text = run(cmd, env, note)
        rows.append((name, status, seconds, text))
        print(f"{status:6s} {seconds:7.1f} s  {name}: {text}", flush=True)
        return status == "ok"

    if "tests" not in skip:
        step(f"pytest on {device}", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     "-m", "not real_model", *[f"tests/{t}" for t in TESTS]])
    if "cli" not in skip:
        start = time.perf_counter()
        model = str(shaped_model(args.shape))
        rows.append((f"random {args.shape} model", "ok", time.perf_counter() - start, model))
        with tempfile.TemporaryDirectory() as tmp:
            lib, out = Path(tmp) / "lib", Path(tmp)
            built = step(f"library build ({len(TASKS)} tasks)",
                         cli("library", "build", "--models", model, "--tasks", ",".join(TASKS),
                             "--preset", "smoke", "--root", str(lib)))
            if built:
                step("select (ppl)", cli("select", "--target", TARGET, "--library", str(lib), "--model",
                                         model, "--k", "3", "--strategy", "ppl", "--shots", "8"))
            for method in METHODS if built else []:
                ckpt = out / method
                if step(f"moe fit {method}", cli("moe", "fit", "--method", method, "--model", model,
                                                 "--experts", ",".join(TASKS[:3]), "--library", str(lib),
                                                 "--task", TARGET, "--preset", "smoke", "--out", str(ckpt))):
                    summary = out / f"{method}.json"
                    step(f"eval {method}", cli("eval", "--model", model, "--adapter", str(ckpt), "--task",
                                               TARGET, "--limit", "8", "--json", str(summary)),
                         note=lambda _, p=summary: _accuracy(p))
    if "bench" not in skip:
        for name, extra in BENCHES.items():
            step(f"bench {name}", [sys.executable, f"bench/{name}.py", "--device", device,
                                   "--shape", args.shape, *extra])

    print(f"\nGPU check on {device}, shape {args.shape}:")
    print(f"| step | status | seconds | note |\n| --- | --- | ---: | --- |")
    for name, status, seconds, text in rows:
        print(f"| {name} | {status} | {seconds:.1f} | {text.replace('|', '/')} |")
    sys.exit(0 if all(r[1] == "ok" for r in rows) else 1)


def _accuracy(path: Path) -> str:
    summary = json.loads(path.read_text())
    s = summary.get("summary", summary)
    return f"{s.get('metric')} = {s.get('value')} (n={s.get('n')})"


if __name__ == "__main__":
    main()
