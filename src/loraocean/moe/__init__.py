"""LoRA mixture-of-experts methods behind one interface.

- `layer`: the stacked multi-expert Linear every method uses; `experts`: expert LoRAs as tensors.
- `methods/`: one module per method (LoRAMoE, X-LoRA, Rocket, MoLE, Arrow, LoraHub, PEFT merges,
  baselines), registered by name in `METHODS` (third-party: the `loraocean.methods` entry points).
- `fit` trains and writes a checkpoint; `load_checkpoint` puts it back on a base model;
  `routing` exports mean gates per layer and expert.
"""

from loraocean.moe.checkpoint import load_checkpoint, save_checkpoint
from loraocean.moe.experts import Expert, fresh_expert, load_adapter
from loraocean.moe.fit import fit, fit_model
from loraocean.moe.layer import MoELinear, inject, moe_layers, remove
from loraocean.moe import methods  # noqa: F401  (registers ours before any get_method call)
from loraocean.moe.model import MoEModel
from loraocean.moe.registry import METHODS, Method, all_methods, get_method, register_method
from loraocean.moe.routing import routing_stats, write_routing

__all__ = ["METHODS", "Expert", "Method", "MoELinear", "MoEModel", "all_methods", "fit", "fit_model", "fresh_expert",
           "get_method", "inject", "load_adapter", "load_checkpoint", "moe_layers", "register_method",
           "remove", "routing_stats", "save_checkpoint", "write_routing"]
