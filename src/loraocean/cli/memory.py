"""The options that fit a training run into a card's memory, shared by `train`, `library build`
and `moe fit`. None of them changes what is learned (see `loraocean.trainer`)."""

from __future__ import annotations

import typer

CHECKPOINTING = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                             help="Recompute activations in backward (default: the preset's; on in loralib).")
MICRO_BATCH = typer.Option(None, help="Examples per forward pass (the preset's batch is split; same gradients).")
MAX_MEMORY = typer.Option(None, help="CUDA: GiB of the card this run may use; steps that do not fit "
                                     "run with smaller micro-batches.")
QUANTIZE = typer.Option(None, help="Load the base in 4bit (NF4) or 8bit through bitsandbytes (CUDA only).")


def overrides(gradient_checkpointing: bool | None, micro_batch: int | None,
              max_memory: float | None) -> dict:
    """The training-config fields the user set (unset ones keep the preset's value)."""
    given = {"gradient_checkpointing": gradient_checkpointing, "micro_batch": micro_batch,
             "max_memory_gib": max_memory}
    return {k: v for k, v in given.items() if v is not None}
