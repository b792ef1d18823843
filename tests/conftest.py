"""Shared test set-up: the test device, a persistent cache for the converted embedded model, the
BIG-bench files (../shared read in place when it is there, else fetched once into the cache), and
tiny models.

Device: `LORAOCEAN_TEST_DEVICE` (default cpu; `cuda` on a GPU machine, see `make test-gpu`) is
where `models.load` puts every model (through $LORAOCEAN_DEVICE, which the CLI run in subprocesses
inherits too), in the dtype `models.default_dtype` picks there (bf16 on a GPU). Tests build their
inputs with `on_device(...)` / `device=DEVICE` and compare with `tol(cpu, bf16)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORAOCEAN_SHARED", ROOT.parent / "shared"))

DEVICE = torch.device(os.environ.get("LORAOCEAN_TEST_DEVICE") or "cpu")
os.environ["LORAOCEAN_DEVICE"] = str(DEVICE)

# The user's cache, as `make run` uses it, before the tests point LORAOCEAN_HOME at their own.
USER_HOME = Path(os.environ.get("LORAOCEAN_HOME") or Path.home() / ".cache" / "loraocean")
# The embedded model is converted once into this cache and reused by every test run.
os.environ.setdefault("LORAOCEAN_HOME", str(ROOT / ".cache" / "loraocean-test"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from loraocean.models import default_dtype  # noqa: E402  (after LORAOCEAN_DEVICE is set)

DTYPE = default_dtype(str(DEVICE))


def tol(cpu: float, bf16: float) -> float:
    """A tolerance for a comparison of model outputs: `cpu` as written for fp32, or `bf16` when
    the models run in a half-precision dtype (bf16 on a GPU). bf16 keeps 8 bits of mantissa, so
    each rounding is up to 2**-9 relative, and two computations of the same quantity in different
    operation orders (ours and PEFT's, a cached and an uncached pass) differ by a few of those
    roundings accumulated over the layers; the call site says what its bf16 number covers."""
    return cpu if DTYPE == torch.float32 else bf16


def on_device(x):
    """A tensor, or a dict of them (a padded batch), moved to the test device."""
    return {k: v.to(DEVICE) for k, v in x.items()} if isinstance(x, dict) else x.to(DEVICE)


def _bigbench_root() -> Path:
    """../shared/data/bigbench when it is there (a shortcut, read in place); else the copy that
    `loraocean data fetch bigbench` keeps in the user's cache, fetched now if missing (once: the
    bigbench sdist from PyPI, as `make run` fetches it)."""
    shared = SHARED / "data" / "bigbench"
    if shared.is_dir():
        return shared
    from loraocean.tasks.fetch import fetch_bigbench

    tests_home = os.environ["LORAOCEAN_HOME"]
    os.environ["LORAOCEAN_HOME"] = str(USER_HOME)
    try:
        return fetch_bigbench()
    finally:
        os.environ["LORAOCEAN_HOME"] = tests_home


BIGBENCH = _bigbench_root()
os.environ.setdefault("LORAOCEAN_BIGBENCH", str(BIGBENCH))


def bigbench_task(name: str) -> str:
    """A `bigbench:PATH` reference to a BIG-bench task folder."""
    path = BIGBENCH / name
    if not path.is_dir():
        pytest.fail(f"{path} is missing: BIGBENCH ({BIGBENCH}) holds no task {name!r}")
    return f"bigbench:{path}"


@pytest.fixture(scope="session")
def tiny_llama():
    from loraocean.models import load

    return load("tiny-llama")


SMOKE_TASKS = ["bb_sports_understanding", "bb_implicatures"]


@pytest.fixture(scope="session")
def smoke_library(tmp_path_factory):
    """A library of tiny-llama LoRAs (smoke preset) for SMOKE_TASKS, built once per test session."""
    from loraocean.library import Library
    from loraocean.library.train import train_lora

    root = tmp_path_factory.mktemp("smoke-library")
    for task in SMOKE_TASKS:
        train_lora("tiny-llama", task, preset="smoke", out=Library(root).path("tiny-llama", task))
    return root
