"""Rocket's MoE stage (Yang et al., arXiv 2408.15915): per adapted Linear a gate Linear(d_in, E,
no bias), softmax, top-2 renormalised, over experts initialised from the selected library LoRAs;
experts and gates fine-tuned jointly (or the gates only). No auxiliary loss.

The alpha/r question: the reference code leaves each expert's alpha/r scaling out of the MoE
forward. We keep it (`keep_scaling=True`): the experts were trained with that scaling, so keeping
it makes a one-hot gate reproduce the library LoRA exactly, which is what "initialised from a
library LoRA" should mean. `keep_scaling=False` reproduces the reference behaviour.
Expert dropout 0.05 on each expert's input, as the reference's `lora_dropout`.
Expert selection (accuracy / reasoning perplexity / diversity) is the `rocket` strategy of
`loraocean.selection`; a study that lists this method also fits it on that strategy's experts
(`default_selection`). The reference code trains with lr 5e-5 for 5 epochs (`train_overrides`,
documentation only: a study applies it only when its file names it, e.g.
`{name: rocket, train: {lr: 5.0e-5, epochs: 5}}`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loraocean.errors import ConfigError
from loraocean.moe.layer import SoftmaxRouter, inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    top_k: int = 2
    router_only: bool = False       # True: experts frozen, only the gates train
    keep_scaling: bool = True       # see the module docstring
    targets: list[str] | None = None  # leaf names to adapt; None: every module the experts adapt
    dropout: float = 0.05           # on each expert's input, as the reference's lora_dropout
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "top_k", self.top_k >= 1, "must be at least 1")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")


@register_method("rocket", Config, trains=True, train_cost=1.3, default_selection="rocket",
                 train_overrides={"lr": 5e-5, "epochs": 5}, cite="Yang et al., arXiv 2408.15915",
                 degenerates=("expert",))
def build(base, experts, cfg: Config) -> MoEModel:
    """Rocket: top-2 gate per Linear over library-initialised experts, trained jointly."""
    if not experts:
        raise ConfigError("rocket needs library LoRAs as experts (give --experts)")
    freeze_base(base)
    n = len(experts)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        layers = inject(base, experts, cfg.targets, cfg.dropout,
                        router=lambda layer: SoftmaxRouter(layer.d_in, n, top_k=cfg.top_k)
                        .to(layer.lora_A.device))
    for layer in layers.values():
        if not cfg.keep_scaling:
            layer.scales.fill_(1.0)
        layer.lora_A.requires_grad_(not cfg.router_only)
        layer.lora_B.requires_grad_(not cfg.router_only)
    return MoEModel(base, cfg, experts)
