"""The architecture table: LoRA target modules of each model family (their tiny test models:
`models.tiny`).

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


_LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_GATED_MLP = ("gate_proj", "up_proj", "down_proj")
_FUSED_QKV = ("query_key_value", "dense")
_H_4H = ("dense_h_to_4h", "dense_4h_to_h")

# The 17 supported families (transformers `model_type`). Leaf names are what PEFT's
# `target_modules` matches; a dotted name ("attn.c_proj") matches a suffix of the module path.
FAMILIES: dict[str, Family] = {
    "llama": Family(_LLAMA_ATTN, _GATED_MLP),
    "mistral": Family(_LLAMA_ATTN, _GATED_MLP),
    "qwen2": Family(_LLAMA_ATTN, _GATED_MLP, "q/k/v have a bias"),
    "qwen3": Family(_LLAMA_ATTN, _GATED_MLP, "q/k RMS norms; head_dim set explicitly"),
    "gemma": Family(_LLAMA_ATTN, _GATED_MLP, "head_dim independent of hidden_size (256 by default)"),
    "gemma2": Family(_LLAMA_ATTN, _GATED_MLP, "logit soft-capping; alternating sliding window"),
    "gemma3_text": Family(_LLAMA_ATTN, _GATED_MLP, "text-only Gemma 3; q/k norms, sliding window"),
    "phi": Family(("q_proj", "k_proj", "v_proj", "dense"), ("fc1", "fc2"),
                  "attention output is `dense`; partial rotary"),
    "phi3": Family(("qkv_proj", "o_proj"), ("gate_up_proj", "down_proj"),
                   "fused qkv and fused gate+up projections"),
    "gpt2": Family(("c_attn", "attn.c_proj"), ("c_fc", "mlp.c_proj"),
                   "Conv1D layers (weight stored in x out): LoRA needs fan_in_fan_out=True; "
                   "`c_proj` exists in attention and MLP, so the parts are told apart by path"),
    "gpt_neox": Family(_FUSED_QKV, _H_4H, "fused query_key_value"),
    "opt": Family(("q_proj", "k_proj", "v_proj", "out_proj"), ("fc1", "fc2"),
                  "MLP layers sit directly on the decoder layer"),
    "falcon": Family(_FUSED_QKV, _H_4H, "FalconLinear (a Linear subclass); fused query_key_value"),
    "bloom": Family(_FUSED_QKV, _H_4H, "fused query_key_value; ALiBi positions"),
    "stablelm": Family(_LLAMA_ATTN, _GATED_MLP, "partial rotary"),
    "olmo2": Family(_LLAMA_ATTN, _GATED_MLP, "q/k norms; norms after attention and MLP"),
    "starcoder2": Family(_LLAMA_ATTN, ("c_fc", "c_proj"), "non-gated MLP named c_fc / c_proj"),
}

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


def matches(module_name: str, target_names) -> bool:
    """Whether a module path is one of `targets()`' names, as PEFT matches them: the whole path,
    or a suffix after a dot (a leaf name like `q_proj`, or a dotted one like `attn.c_proj`)."""
    return any(module_name == t or module_name.endswith("." + t) for t in target_names)


def linear_dims(module) -> tuple[int, int] | None:
    """(d_in, d_out) of a Linear layer, or of transformers' Conv1D (GPT-2: the same map with the
    weight stored d_in x d_out, which PEFT adapts with fan_in_fan_out); None for anything else."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None
