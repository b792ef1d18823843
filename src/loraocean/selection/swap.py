"""Putting candidate LoRAs on one loaded base model, one after another, without reloading it.

Two ways, same interface (`load(path)`, `.model` to run, `close()` gives the base model back):

- `MergedSlot` (fp32 base, plain LoRAs): each LoRA's delta scale * B @ A is added into the base
  model's own Linear weights, after restoring them from a copy kept at the first swap, so every
  candidate sees exactly W + delta whatever came before, and the forward costs exactly one base
  pass. Why by hand: PEFT's merge/unmerge round-trips W through W + delta - delta, which drifts by
  rounding from one candidate to the next; restoring from a copy keeps each candidate exact.
  Costs one extra copy of the adapted weights while the slot is open.
- `PeftSlot` (anything else: half-precision bases, where merging would round small deltas away;
  DoRA and other LoRA variants): one PeftModel whose LoRA weights are replaced in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from loraocean.errors import IntegrityError
from loraocean.library.adapter import read_lora


def _config(path) -> dict:
    return json.loads((Path(path) / "adapter_config.json").read_text())


def mergeable(model, paths) -> bool:
    """True when every LoRA is a plain LoRA on Linear layers and the base weights are fp32."""
    if next(model.parameters()).dtype != torch.float32:
        return False
    for path in paths:
        c = _config(path)
        if (c.get("peft_type") != "LORA" or c.get("use_dora") or c.get("modules_to_save")
                or c.get("bias", "none") != "none" or c.get("lora_bias")):
            return False
    return True


def open_slot(model, paths, how: str = "auto"):
    """A slot for these LoRAs on this base model: `merge`, `peft`, or `auto` (merge when
    `mergeable`, the faster exact way, else peft)."""
    from loraocean.errors import ConfigError

    if how not in ("auto", "merge", "peft"):
        raise ConfigError(f"unknown adapter swap {how!r}; use auto, merge or peft")
    if how == "merge" or (how == "auto" and mergeable(model, paths)):
        return MergedSlot(model)
    return PeftSlot(model)


class MergedSlot:

    def __init__(self, model):
        self.base = model
        self.model = model
        self.modules = dict(model.named_modules())
        self.originals: dict[str, torch.Tensor] = {}

    def _restore(self) -> None:
        with torch.no_grad():
            for name, weight in self.originals.items():
                self.modules[name].weight.copy_(weight)

    def load(self, path) -> None:
        lora = read_lora(path)
        fan_in_fan_out = bool(lora.config.get("fan_in_fan_out"))
        self._restore()
        with torch.no_grad():
            for name, a in lora.A.items():
                b, scale = lora.B[name], lora.scale[name]
                module = self.modules.get(name)
                if module is None or not hasattr(module, "weight"):
                    raise IntegrityError(f"{path}: the LoRA adapts {name!r}, which the base model "
                                         "does not have; was it trained on another model?")
                weight = module.weight
                if name not in self.originals:
                    self.originals[name] = weight.detach().clone()
                delta = (b.to(weight) @ a.to(weight)) * scale  # the weight's device and dtype
                weight.add_(delta.T if fan_in_fan_out else delta)

    def close(self):
        self._restore()
        self.originals.clear()
        return self.base


def _config_key(config) -> str:
    """What makes two LoRA configs interchangeable (same modules, shapes and scaling)."""
    d = config.to_dict()
    for drop in ("base_model_name_or_path", "revision", "inference_mode", "peft_version", "task_type"):
        d.pop(drop, None)
    return json.dumps(d, sort_keys=True, default=lambda v: sorted(v) if isinstance(v, set) else str(v))


class PeftSlot:
    """One PeftModel over a base model; `load(path)` makes the LoRA at `path` the active one.

    LoRAs with the same config are swapped by copying their safetensors weights into the existing
    LoRA parameters (no new modules, no re-initialisation); others get a fresh adapter injected and
    the previous one deleted. `close()` removes the LoRA layers and gives the base model back.
    """

    NAME = "candidate"

    def __init__(self, model):
        self.base = model
        self.model = None
        self.key = None
        self.active = None
        self.swaps = 0

    def load(self, path) -> None:
        from peft import LoraConfig, PeftModel
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        path = str(path)
        config = LoraConfig.from_pretrained(path)
        key = _config_key(config)
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base, path, adapter_name=self.NAME)
            self.active = self.NAME
        elif key == self.key:
            weights = load_peft_weights(path)  # safetensors only
            result = set_peft_model_state_dict(self.model, weights, adapter_name=self.active)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                raise IntegrityError(f"{path}: adapter weights do not match its adapter_config.json "
                                     f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected "
                                     "keys); retrain or re-download this LoRA")
        else:
            self.swaps += 1
            name = f"{self.NAME}{self.swaps}"
            self.model.load_adapter(path, adapter_name=name)
            self.model.set_adapter(name)
            self.model.delete_adapter(self.active)
            self.active = name
        self.key = key
        self.model.eval()

    def close(self):
        if self.model is not None:
            self.model.unload()
            self.model = None
        return self.base
