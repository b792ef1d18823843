"""Expert LoRAs as plain tensors: read from PEFT adapter folders, or freshly initialised.

An `Expert` holds, for every module it adapts (full module name, e.g.
`model.layers.0.mlp.up_proj`), the LoRA matrices A (r x d_in), B (d_out x r) and the scaling
s = alpha / r (alpha / sqrt(r) with rsLoRA). The stacked layer (`moe.layer`) copies them exactly.
We read the safetensors file (`library.adapter.read_lora`), not through PeftModel, because an MoE
needs the raw A/B of many adapters at once, side by side, without PEFT's per-adapter wrapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraocean.errors import AdapterMismatchError, DataError, LoraOceanError
from loraocean.library.adapter import CONFIG, WEIGHTS, check_adapter, check_fits, read_lora
from loraocean.library.store import check_card, check_entry_folder, read_card
from loraocean.models import name_of
from loraocean.models.architectures import linear_dims, matches


@dataclass
class Expert:
    name: str
    A: dict[str, torch.Tensor] = field(default_factory=dict)      # module -> (r, d_in)
    B: dict[str, torch.Tensor] = field(default_factory=dict)      # module -> (d_out, r)
    scale: dict[str, float] = field(default_factory=dict)         # module -> alpha / r
    source: str = "fresh"  # adapter folder, or "fresh"
    task: str | None = None

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    def rank(self, module: str) -> int:
        return self.A[module].shape[0] if module in self.A else 0

    def only(self, target_names) -> "Expert":
        """The same expert restricted to modules matching `target_names` (leaf names or dotted
        suffixes such as GPT-2's `mlp.c_proj`, as PEFT matches them)."""
        keep = [m for m in self.A if matches(m, target_names)]
        return Expert(self.name, {m: self.A[m] for m in keep}, {m: self.B[m] for m in keep},
                      {m: self.scale[m] for m in keep}, self.source, self.task)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "task": self.task,
                "ranks": {m: self.rank(m) for m in self.A}, "scales": dict(self.scale)}


def load_adapter(folder: str | Path, name: str | None = None, model=None) -> Expert:
    """Read a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) with
    `library.adapter.read_lora`.

    With `model`, checks that every adapted module exists in it with matching shapes, and (when
    the folder has a card.json naming a model) that the card's model is the one loaded.
    """
    folder = Path(folder)
    cfg_path, weights = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise LoraOceanError(f"{folder} is not a PEFT adapter folder (needs {CONFIG} and "
                             f"{WEIGHTS}); train one with `loraocean library train`")
    config = check_adapter(folder)
    check_card(folder)
    check_entry_folder(folder)  # a library entry in another entry's folder is refused
    if config.get("use_dora"):
        raise DataError(cfg_path, "DoRA adapters are not supported as experts", field="use_dora",
                        fix="train a plain LoRA")
    if config.get("bias", "none") != "none":
        raise DataError(cfg_path, "LoRA bias terms are not supported as experts", field="bias")
    if model is not None and (folder / "card.json").is_file():
        card_model = read_card(folder).get("model")
        loaded = name_of(model)
        if card_model and loaded and card_model != loaded:
            raise AdapterMismatchError(f"{folder} was trained on {card_model!r} but the model is {loaded!r}; "
                                       "use experts trained on the same base model")
    if model is not None:
        check_fits(folder, model)
    lora = read_lora(folder)
    return Expert(name=name or folder.name, A={m: a.float() for m, a in lora.A.items()},
                  B={m: b.float() for m, b in lora.B.items()}, scale=dict(lora.scale), source=str(folder))


def fresh_expert(model, name: str, targets, r: int, alpha: float, generator: torch.Generator) -> Expert:
    """A new LoRA on every Linear matching `targets`: A kaiming-uniform (a=sqrt(5), as PEFT and
    nn.Linear do), B zero, so the expert starts as a no-op."""
    expert = Expert(name=name)
    for module_name, module in model.named_modules():
        dims = linear_dims(module)
        if dims is not None and matches(module_name, targets):
            d_in, d_out = dims
            bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform with a=sqrt(5)
            A = (torch.rand(r, d_in, generator=generator) * 2 - 1) * bound
            expert.A[module_name] = A
            expert.B[module_name] = torch.zeros(d_out, r)
            expert.scale[module_name] = alpha / r
    return expert


def shaped_expert(desc: dict) -> Expert:
    """An all-zero expert with the ranks and scales of `Expert.describe()` output; its weights are
    filled from a checkpoint afterwards."""
    expert = Expert(name=desc["name"], source=desc.get("source", "fresh"), task=desc.get("task"))
    for m, r in desc["ranks"].items():
        expert.A[m] = torch.zeros(r, 0)  # d_in is taken from the model when the layer is built
        expert.B[m] = torch.zeros(0, r)
        expert.scale[m] = desc["scales"][m]
    return expert
