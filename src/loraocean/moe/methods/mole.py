"""MoLE (Wu et al., "Mixture of LoRA Experts", ICLR 2024): the library LoRAs stay frozen; each
adapted Linear learns a gate over the experts' outputs, softmax(/temperature); a balance loss
-log prod_i q_i (q_i: mean gate of expert i over the batch's tokens) keeps experts in use.

Details the paper leaves open (unverified), our choices: the gate logit of expert e at a token is
w_l . (s_e B_e A_e x) with one learned vector w_l (d_out) per adapted Linear, initialised to zero
(so training starts from the uniform average); the balance loss is averaged over layers and
weighted by `balance_coef`. The logits need no per-expert loop: w_l^T B_cat is one vector over the
stacked rank columns, summed per expert with a (R x E) membership matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loraocean.errors import ConfigError
from loraocean.moe.layer import inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    temperature: float = 1.0
    balance_coef: float = 0.01
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "temperature", self.temperature > 0, "must be positive")
        check_config(self, "balance_coef", self.balance_coef >= 0, "must be at least 0")


class OutputGate(nn.Module):
    def __init__(self, layer, temperature: float):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(layer.d_out, device=layer.lora_A.device))
        member = F.one_hot(layer.owner, layer.n_experts).float()  # (R, E)
        self.register_buffer("member", member, persistent=False)
        self.temperature = temperature

    def forward(self, x, h, layer):
        u = F.linear(self.w.to(layer.lora_B.dtype)[None], layer.lora_B.T)[0]  # (R,) = w^T B_cat
        per_expert = (h * u).float() @ self.member * layer.scales  # (..., E)
        return (per_expert / self.temperature).softmax(-1)


def aux_loss(model: MoEModel, cfg: Config) -> torch.Tensor | None:
    losses = []
    mask = model.attention_mask
    for layer in model.layers().values():
        g = model.gates_of(layer)
        if g is None:
            continue
        g = g.float()
        if mask is not None:
            m = mask[..., None].to(g.dtype)
            q = (g * m).sum((0, 1)) / m.sum().clamp_min(1)
        else:
            q = g.reshape(-1, g.shape[-1]).mean(0)
        losses.append(-q.clamp_min(1e-20).log().sum())
    return cfg.balance_coef * torch.stack(losses).mean() if losses else None


@register_method("mole", Config, trains=True, aux_loss=aux_loss, cite="Wu et al., ICLR 2024",
                 degenerates=("expert",))
def build(base, experts, cfg: Config) -> MoEModel:
    """MoLE: frozen library LoRAs, learned per-layer gate over their outputs, balance loss."""
    if not experts:
        raise ConfigError("mole needs library LoRAs as experts (give --experts)")
    freeze_base(base)
    layers = inject(base, experts, router=lambda layer: OutputGate(layer, cfg.temperature))
    for layer in layers.values():
        layer.lora_A.requires_grad_(False)
        layer.lora_B.requires_grad_(False)
    return MoEModel(base, cfg, experts)
