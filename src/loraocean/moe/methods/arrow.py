"""Arrow routing (Ostapenko et al., arXiv 2405.11157; PEFT's ArrowConfig / create_arrow_model):
training-free. Each expert's prototype at a Linear is the top right singular vector v_e of its
delta B_e A_e; a token x scores |v_e . x| for each expert, the top_k scores are kept and
softmax(/temperature)-ed over the kept ones. We compute v_e with an exact SVD of the small
(r x d_in) factor sqrt(B^T B) A instead of PEFT's 15 steps of power iteration, which can stop
short of the top vector when the top singular values are close (seen on random adapters); the
sign of v_e does not matter (|.|). Routing with the same prototypes matches PEFT (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loraocean.errors import ConfigError
from loraocean.moe.layer import inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    top_k: int = 3
    temperature: float = 1.0

    def __post_init__(self):
        check_types(self)
        check_config(self, "top_k", self.top_k >= 1, "must be at least 1")
        check_config(self, "temperature", self.temperature > 0, "must be positive")


def prototype(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Top right singular vector of B @ A (d_in), without forming B @ A: (BA)^T BA = A^T (B^T B) A,
    and with B^T B = L L^T, that is (L^T A)^T (L^T A)."""
    A, B = A.double(), B.double()
    C = B.T @ B
    evals, evecs = torch.linalg.eigh(C)
    root = evecs * evals.clamp_min(0).sqrt()  # C = root root^T
    _, _, vh = torch.linalg.svd(root.T @ A, full_matrices=False)
    return vh[0].float()


class ArrowRouter(nn.Module):
    def __init__(self, layer, top_k: int, temperature: float):
        super().__init__()
        protos = []
        for e in range(layer.n_experts):
            sl = layer.expert_slice(e)
            if layer.ranks[e] == 0:
                raise ConfigError("arrow needs every expert to adapt the same modules")
            protos.append(prototype(layer.lora_A.detach()[sl], layer.lora_B.detach()[:, sl]))
        self.register_buffer("prototypes", torch.stack(protos).to(layer.lora_A.device))  # (E, d_in)
        self.top_k = min(top_k, layer.n_experts)
        self.temperature = temperature

    def forward(self, x, h, layer):
        sim = (x.float() @ self.prototypes.T).abs()
        values, idx = sim.topk(self.top_k, dim=-1)
        scores = torch.full_like(sim, float("-inf")).scatter(-1, idx, values)
        return (scores / self.temperature).softmax(-1)


@register_method("arrow", Config, cite="Ostapenko et al., arXiv 2405.11157; PEFT's ArrowConfig",
                 degenerates=("expert",))
def build(base, experts, cfg: Config) -> MoEModel:
    """Arrow: training-free per-token routing by each LoRA's top right singular vector."""
    if not experts:
        raise ConfigError("arrow needs library LoRAs as experts (give --experts)")
    freeze_base(base)
    inject(base, experts, router=lambda layer: ArrowRouter(layer, cfg.top_k, cfg.temperature))
    return MoEModel(base, cfg, experts)
