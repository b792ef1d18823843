"""Expert LoRAs as plain tensors: read from PEFT adapter folders, or freshly initialised.

An `Expert` holds, for every module it adapts (full module name, e.g.
`model.layers.0.mlp.up_proj`), the LoRA matrices A (r x d_in), B (d_out x r) and the scaling
s = alpha / r (alpha / sqrt(r) with rsLoRA). The stacked layer (`moe.layer`) copies them exactly.
We read the safetensors file ourselves (not through PeftModel) because an MoE needs the raw A/B of
many adapters at once, side by side, without PEFT's per-adapter module wrapping.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraocean.errors import AdapterMismatchError, DataError, LoraOceanError
from loraocean.library.adapter import alpha_of, check_adapter
from loraocean.library.store import check_card, read_card
from loraocean.models.architectures import matches

_PREFIX = "base_model.model."


def linear_dims(module) -> tuple[int, int] | None:
    """(d_in, d_out) of a Linear layer, or of transformers' Conv1D (GPT-2: the same map with the
    weight stored d_in x d_out, which PEFT adapts with fan_in_fan_out); None for anything else."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


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
    """Read a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).

    With `model`, checks that every adapted module exists in it with matching shapes, and (when
    the folder has a card.json naming a model) that the card's model is the one loaded.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise LoraOceanError(f"{folder} is not a PEFT adapter folder (needs adapter_config.json and "
                             "adapter_model.safetensors); train one with `loraocean library train`")
    cfg = check_adapter(folder)
    check_card(folder)
    if cfg.get("use_dora"):
        raise DataError(cfg_path, "DoRA adapters are not supported as experts", field="use_dora",
                        fix="train a plain LoRA")
    if cfg.get("bias", "none") != "none":
        raise DataError(cfg_path, "LoRA bias terms are not supported as experts", field="bias")
    card_path = folder / "card.json"
    if model is not None and card_path.is_file():
        card_model = read_card(folder).get("model")
        loaded = getattr(model.config, "loraocean_name", None)
        if card_model and loaded and card_model != loaded:
            raise AdapterMismatchError(f"{folder} was trained on {card_model!r} but the model is {loaded!r}; "
                                       "use experts trained on the same base model")
    tensors = load_file(str(weights))
    expert = Expert(name=name or folder.name, source=str(folder))
    for key, value in tensors.items():
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if not match:
            raise DataError(weights, f"unexpected tensor {key!r} (only lora_A / lora_B weights are supported)")
        module = match.group(1)
        module = module[len(_PREFIX):] if module.startswith(_PREFIX) else module
        (expert.A if match.group(2) == "A" else expert.B)[module] = value.float()
    for module in expert.A:
        if module not in expert.B:
            raise DataError(weights, f"{module} has lora_A but no lora_B")
        r = expert.A[module].shape[0]
        alpha = alpha_of(cfg, module, r)
        expert.scale[module] = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    if model is not None:
        check_fits(expert, model)
    return expert


def check_fits(expert: Expert, model) -> None:
    modules = dict(model.named_modules())
    for m, A in expert.A.items():
        layer = modules.get(m)
        if layer is None:
            raise AdapterMismatchError(f"expert {expert.name!r} adapts {m!r}, which the model does not have; "
                                       "it was trained on another architecture")
        dims = linear_dims(getattr(layer, "base", layer))
        if dims is None:
            raise AdapterMismatchError(f"expert {expert.name!r} adapts {m!r}, which is a "
                                       f"{type(layer).__name__}, not a Linear layer")
        if (dims[1], dims[0]) != (expert.B[m].shape[0], A.shape[1]):
            raise AdapterMismatchError(f"expert {expert.name!r}: {m} has shape {tuple(expert.B[m].shape[:1]) + tuple(A.shape[1:])} "
                                       f"but the model's layer is {(dims[1], dims[0])}")


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
