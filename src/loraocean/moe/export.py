"""MoE checkpoints as PEFT folders, for tools that know PEFT and not loraocean.

- A method whose every layer mixes its experts with fixed gates (uniform, single, the merges,
  LoraHub) is one LoRA: y = W0 x + sum_e g_e s_e B_e A_e x = W0 x + c B' A x with A the experts'
  A stacked, B' their B side by side with column j scaled by g_e s_e / c. It becomes one PEFT
  LoRA folder (`PeftModel.from_pretrained` loads it).
- X-LoRA becomes PEFT's X-LoRA layout: `adapter_config.json` (XLoraConfig, adapters named "0",
  "1", ... after their subfolders), `adapter_model.safetensors` (the classifier) and one PEFT LoRA
  folder per expert.
- Routed methods PEFT has no layer for (LoRAMoE, Rocket, MoLE, Arrow) stay in our checkpoint
  format, specified in docs/checkpoint-format.md.

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


def _layers(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
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


def _owner(config: dict, module: str) -> torch.Tensor:
    """Column j of the stacked A/B of `module` belongs to expert owner[j]."""
    ranks = [e["ranks"].get(module, 0) for e in config["experts"]]
    return torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks, dtype=torch.long))


def single_lora(config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(A, B, scale) of the one LoRA a fixed-gate checkpoint is; raises when it is not one."""
    layers = _layers(state)
    fixed = {"lora_A", "lora_B", "scales", "router.weights"}  # FixedGates: the same gates everywhere
    routed = [m for m, t in layers.items() if set(t) != fixed]
    if routed or any(not k.startswith("layers.") for k in state) or not layers:
        what = "has no experts" if not layers else "routes per token"
        raise LoraOceanError(f"method {config['method']!r} {what}, so it is not one LoRA; "
                             "export X-LoRA with --to peft too, and read LoRAMoE, Rocket, MoLE and "
                             "Arrow checkpoints as docs/checkpoint-format.md describes")
    A, B, scale = {}, {}, {}
    for m, t in layers.items():
        factor = (t["router.weights"].double() * t["scales"].double())[_owner(config, m)]
        c = float(factor[0])
        if c == 0 or not torch.equal(factor, torch.full_like(factor, c)):
            c = 1.0  # experts mixed with different weights: fold each one's into its columns of B
            B[m] = (t["lora_B"].double() * factor).to(t["lora_B"].dtype)
        else:
            B[m] = t["lora_B"]
        A[m], scale[m] = t["lora_A"], c
    return A, B, scale


def export_xlora(config: dict, state: dict[str, torch.Tensor], out: Path, hidden_size: int) -> None:
    from peft import XLoraConfig
    from safetensors.torch import save_file

    layers = _layers(state)
    names = [str(i) for i in range(len(config["experts"]))]
    for i, name in enumerate(names):
        A, B, scale = {}, {}, {}
        for m, t in layers.items():
            cols = (_owner(config, m) == i).nonzero().flatten()
            if len(cols):
                A[m], B[m] = t["lora_A"][cols], t["lora_B"][:, cols]
                scale[m] = float(t["scales"][i])
        (out / name).mkdir()
        write_lora(out / name, A, B, scale, config.get("base_model"))
    c = config["config"]
    XLoraConfig(task_type="CAUSAL_LM", hidden_size=hidden_size, adapters={n: n for n in names},
                xlora_depth=c["depth"], xlora_size=c["hidden"], xlora_dropout_p=c["dropout"],
                layerwise_scalings=c["layerwise"], softmax_temperature=c["temperature"],
                enable_softmax=c["enable_softmax"], top_k_lora=c["top_k"],
                enable_softmax_topk=c["softmax_topk"], scaling_pass_value=c["scaling_pass_value"],
                global_scaling_weight=c["global_scaling_weight"],
                base_model_name_or_path=hub_id(config.get("base_model"))).save_pretrained(str(out))
    classifier = {f"base_model.internal_xlora_classifier.layers.{k[len('classifier.'):]}": v.contiguous()
                  for k, v in state.items() if k.startswith("classifier.")}
    save_file(classifier, str(out / PEFT_WEIGHTS), metadata={"format": "pt"})


def export_peft(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> str:
    """Write `checkpoint` as a PEFT folder at `out`; returns "lora" or "xlora" (the layout)."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    config = read_config(checkpoint)
    check(checkpoint)  # its files are what its card recorded
    state = load_file(str(checkpoint / WEIGHTS))
    xlora = config["method"] == "xlora"
    lora = None if xlora else single_lora(config, state)  # raises before anything is written
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if xlora:
            first = next(v for k, v in state.items() if k.startswith("classifier.") and v.dim() == 2)
            export_xlora(config, state, tmp, hidden_size=first.shape[1])
        else:
            write_lora(tmp, *lora, base_model=config.get("base_model"))
    return "xlora" if xlora else "lora"
