"""Shared test set-up: the test device, a persistent cache for the converted embedded model, the
BIG-bench files (../shared read in place when it is there, else fetched once into the cache), and
tiny models.

Device: `LORAOCEAN_TEST_DEVICE` (default cpu; `cuda` on a GPU machine, see `make test-gpu`) is
where `models.load` puts every model, in `LORAOCEAN_TEST_DTYPE` (default float32 on every device,
so a GPU run checks the same numbers as the CPU; `bfloat16` runs the models as users get them on a
GPU). Both reach `models.load` (and the CLI run in subprocesses) through $LORAOCEAN_DEVICE and
$LORAOCEAN_DTYPE. Tests build their inputs with `on_device(...)` / `device=DEVICE` and compare
model outputs with `tol(fp32, bf16)`.
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
os.environ["LORAOCEAN_DTYPE"] = os.environ.get("LORAOCEAN_TEST_DTYPE") or "float32"

# The user's cache, as `make run` uses it, before the tests point LORAOCEAN_HOME at their own.
USER_HOME = Path(os.environ.get("LORAOCEAN_HOME") or Path.home() / ".cache" / "loraocean")
# The embedded model is converted once into this cache and reused by every test run.
os.environ.setdefault("LORAOCEAN_HOME", str(ROOT / ".cache" / "loraocean-test"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from loraocean.models import default_dtype  # noqa: E402  (after LORAOCEAN_DTYPE is set)

DTYPE = default_dtype(str(DEVICE))


def tol(fp32: float, bf16: float) -> float:
    """A tolerance for a comparison of model outputs: `fp32` as written for float32 models (on any
    device), or `bf16` when they run in bfloat16 (LORAOCEAN_TEST_DTYPE). bf16 keeps 8 bits of mantissa, so
    each rounding is up to 2**-9 relative, and two computations of the same quantity in different
    operation orders (ours and PEFT's, a cached and an uncached pass) differ by a few of those
    roundings accumulated over the layers; the call site says what its bf16 number covers."""
    return fp32 if DTYPE == torch.float32 else bf16


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


def stand_in_entry(folder: Path, card: dict) -> None:
    """A library entry with placeholder adapter files and a sealed card, for tests of code that
    reads only the cards (the integrity record covers the placeholders)."""
    from loraocean.library.card import write_card

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"stand-in")
    write_card(folder, card)
