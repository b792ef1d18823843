"""MoE checkpoints as other tools' folders, for tools that know PEFT and not loraocean.

A method that can be exported says how in its registration (`Method.export`, an `Export`: how to
write the folder from the checkpoint's files, and how the tool loads it back); `export_peft` reads
the checkpoint and hands it to that. This module holds the export methods share:
- `LORA`: a checkpoint whose every layer mixes its experts with fixed gates is one LoRA:
  y = W0 x + sum_e g_e s_e B_e A_e x = W0 x + c B' A x with A the experts' A stacked, B' their B side
  by side with column j scaled by g_e s_e / c. It becomes one PEFT LoRA folder
  (`PeftModel.from_pretrained` loads it).
- `write_lora`, `layer_tensors`, `owner_of`: the pieces a method's own export builds on.
Methods without an export stay in our checkpoint format, specified in docs/checkpoint-format.md.

Only the checkpoint's files are read; no base model is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from loraocean.artifacts import atomic_dir
from loraocean.errors import LoraOceanError
from loraocean.library.adapter import stable_config
from loraocean.models import hub_id
from loraocean.moe.checkpoint import WEIGHTS, check, read_config
from loraocean.moe.registry import Export, all_methods, get_method

PEFT_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def write_lora(folder: Path, A: dict, B: dict, scale: dict, base_model: str | None = None) -> None:
    """A PEFT LoRA folder: per module A (r x d_in), B (d_out x r) and scaling `scale` (PEFT's
    lora_alpha / r). Modules whose rank or scaling differs from the first one's get
    rank_pattern / alpha_pattern entries (escaped full names: PEFT matches them as regexes)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    modules = list(A)
    ranks = {m: A[m].shape[0] for m in modules}
    alphas = {m: scale[m] * ranks[m] for m in modules}
    r, alpha = ranks[modules[0]], alphas[modules[0]]
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=modules, base_model_name_or_path=hub_id(base_model),
        rank_pattern={re.escape(m): ranks[m] for m in modules if ranks[m] != r},
        alpha_pattern={re.escape(m): alphas[m] for m in modules if alphas[m] != alpha})
    config.save_pretrained(str(folder))
    stable_config(folder)  # target_modules sorted: the same checkpoint exports to the same bytes
    tensors = {}
    for m in modules:
        tensors[f"{_PREFIX}{m}.lora_A.weight"] = A[m].contiguous()
        tensors[f"{_PREFIX}{m}.lora_B.weight"] = B[m].contiguous()
    save_file(tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})


def layer_tensors(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint's per-layer tensors: {module name: {lora_A, lora_B, scales, router.*}}."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("layers."):
            rest = key[len("layers."):]
            if ".router." in rest:
                module, leaf = rest.split(".router.", 1)
                leaf = "router." + leaf
            else:
                module, leaf = rest.rsplit(".", 1)
            layers.setdefault(module, {})[leaf] = value
    return layers


def owner_of(config: dict, module: str) -> torch.Tensor:
    """Column j of the stacked A/B of `module` belongs to expert owner[j]."""
    ranks = [e["ranks"].get(module, 0) for e in config["experts"]]
    return torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks, dtype=torch.long))


def single_lora(config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(A, B, scale) of the one LoRA a fixed-gate checkpoint is; raises when it is not one."""
    layers = layer_tensors(state)
    fixed = {"lora_A", "lora_B", "scales", "router.weights"}  # FixedGates: the same gates everywhere
    routed = [m for m, t in layers.items() if set(t) != fixed]
    if routed or any(not k.startswith("layers.") for k in state) or not layers:
        what = "has no experts" if not layers else "routes per token"
        raise LoraOceanError(f"this {config['method']!r} checkpoint {what}, so it is not one LoRA; "
                             "read it as docs/checkpoint-format.md describes")
    A, B, scale = {}, {}, {}
    for m, t in layers.items():
        factor = (t["router.weights"].double() * t["scales"].double())[owner_of(config, m)]
        c = float(factor[0])
        if c == 0 or not torch.equal(factor, torch.full_like(factor, c)):
            c = 1.0  # experts mixed with different weights: fold each one's into its columns of B
            B[m] = (t["lora_B"].double() * factor).to(t["lora_B"].dtype)
        else:
            B[m] = t["lora_B"]
        A[m], scale[m] = t["lora_A"], c
    return A, B, scale


def _write_single_lora(config: dict, state: dict[str, torch.Tensor], out: Path) -> None:
    write_lora(out, *single_lora(config, state), base_model=config.get("base_model"))


def _load_peft_lora(base, folder: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)).eval()


LORA = Export("lora", "PEFT LoRA adapter", _write_single_lora, _load_peft_lora)


def export_peft(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Export:
    """Write `checkpoint` as the folder its method exports to (a PEFT folder) at `out`; returns
    the method's `Export` (`.name`: the layout, `.what`: what was written)."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    config = read_config(checkpoint)
    check(checkpoint)  # its files are what its card recorded
    export = get_method(config["method"]).export
    if export is None:
        can = sorted(name for name, m in all_methods().items() if m.export is not None)
        raise LoraOceanError(f"method {config['method']!r} has no export to PEFT (methods that export: "
                             f"{', '.join(can)}); read its checkpoint as docs/checkpoint-format.md describes")
    state = load_file(str(checkpoint / WEIGHTS))
    with atomic_dir(out, overwrite=overwrite) as tmp:  # an export that raises leaves nothing behind
        export.write(config, state, tmp)
    return export
