"""Shared test set-up: a persistent cache for the converted embedded model, the BIG-bench files
from ../shared (read in place, never copied), and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORAOCEAN_SHARED", ROOT.parent / "shared"))
BIGBENCH = SHARED / "data" / "bigbench"

# The embedded model is converted once into this cache and reused by every test run.
os.environ.setdefault("LORAOCEAN_HOME", str(ROOT / ".cache" / "loraocean-test"))
if BIGBENCH.is_dir():
    os.environ.setdefault("LORAOCEAN_BIGBENCH", str(BIGBENCH))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bigbench_task(name: str) -> str:
    """A `bigbench:PATH` reference to a task file in ../shared (fails clearly if the shared
    data folder is missing: CI always has it beside the clone)."""
    path = BIGBENCH / name
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read BIG-bench files from ../shared/data/bigbench")
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
