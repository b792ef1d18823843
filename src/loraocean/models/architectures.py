"""The architecture table: LoRA target modules of each model family, and how to build a tiny one.

`targets(model)` gives the Linear module names a LoRA adapts for a loaded model: the family's
attention and MLP projections, or (unknown family) every Linear except the output head.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    notes: str = ""

    @property
    def all(self) -> tuple[str, ...]:
        return self.attention + self.mlp


_LLAMA = Family(("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj"))

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
}


def tiny_config_kwargs(family: str, vocab_size: int) -> dict:
    from loraocean.models.tiny import TINY_DIMS

    kwargs = dict(TINY_DIMS, vocab_size=vocab_size)
    return kwargs


def targets(model, part: str = "all") -> list[str]:
    """Target module names (leaf names, as PEFT's `target_modules` takes them).

    part: `all`, `attention` or `mlp`.
    """
    family = FAMILIES.get(getattr(model.config, "model_type", ""))
    if family is not None:
        return list({"all": family.all, "attention": family.attention, "mlp": family.mlp}[part])
    warnings.warn(f"unknown model family {model.config.model_type!r}: adapting every Linear layer "
                  "except the output head", stacklevel=2)
    import torch

    names = set()
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)
