"""PEFT merges of the selected LoRAs into one adapter via `add_weighted_adapter`.

combination: cat (exact: the rank is the sum of ranks), linear, ties, dare_ties (A and B merged
separately, not an exact sum of deltas), svd (the full delta merged then truncated to `svd_rank`).
Registered as merge_cat, merge_linear, merge_ties, merge_dare_ties and merge_svd. The merged LoRA
becomes the checkpoint's single expert (gate 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from loraocean.errors import ConfigError
from loraocean.moe.experts import Expert
from loraocean.moe.export import LORA
from loraocean.moe.methods.baselines import fixed
from loraocean.moe.registry import check_config, check_types, register_method

COMBINATIONS = ("cat", "linear", "ties", "dare_ties", "svd")


@dataclass
class Config:
    weights: list[float] | None = None  # one per expert; default 1/E each
    density: float = 0.5                # ties / dare_ties
    svd_rank: int | None = None         # svd; default: the largest expert rank
    majority_sign_method: str = "total"
    seed: int = 0                       # dare_ties drops at random

    def __post_init__(self):
        check_types(self)
        check_config(self, "density", 0 < self.density <= 1, "must be in (0, 1]")
        check_config(self, "svd_rank", self.svd_rank is None or self.svd_rank >= 1, "must be at least 1")
        check_config(self, "majority_sign_method", self.majority_sign_method in ("total", "frequency"),
                     "must be total or frequency")


def peft_merge(base, experts: list[Expert], combination: str, cfg: Config) -> Expert:
    """Load the experts' adapter folders into PEFT, merge, and read the merged A/B back."""
    from peft import PeftModel

    if combination not in COMBINATIONS:
        raise ConfigError(f"unknown merge {combination!r}; use one of {', '.join(COMBINATIONS)}")
    if not experts or any(e.source == "fresh" for e in experts):
        raise ConfigError("merges need library LoRAs (adapter folders) as experts")
    weights = cfg.weights or [1.0 / len(experts)] * len(experts)
    if len(weights) != len(experts):
        raise ConfigError(f"merge weights has {len(weights)} values for {len(experts)} experts")
    names = [f"e{i}" for i in range(len(experts))]
    peft_model = PeftModel.from_pretrained(base, experts[0].source, adapter_name=names[0])
    try:
        for name, e in zip(names[1:], experts[1:]):
            peft_model.load_adapter(e.source, adapter_name=name)
        kwargs = {}
        if combination in ("ties", "dare_ties"):
            kwargs.update(density=cfg.density, majority_sign_method=cfg.majority_sign_method)
        if combination == "svd":
            kwargs["svd_rank"] = cfg.svd_rank or max(e.rank(m) for e in experts for m in e.modules)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            peft_model.add_weighted_adapter(names, list(weights), "merged", combination_type=combination,
                                            **kwargs)
        merged = Expert(name=f"merge_{combination}", source="merged")
        for module_name, module in peft_model.base_model.model.named_modules():
            if hasattr(module, "lora_A") and "merged" in module.lora_A:
                merged.A[module_name] = module.lora_A["merged"].weight.detach().float().cpu().clone()
                merged.B[module_name] = module.lora_B["merged"].weight.detach().float().cpu().clone()
                merged.scale[module_name] = float(module.scaling["merged"])
    finally:
        peft_model.unload()  # the base model without any LoRA layer again
    return merged


def prepare(base, tokenizer, experts, cfg: Config, ctx, combination: str):
    return [peft_merge(base, experts, combination, cfg)]


def build(base, experts, cfg: Config, combination: str):
    if len(experts) != 1:
        raise ConfigError("a merge checkpoint holds exactly one (merged) expert")
    return fixed(base, experts, [1.0], cfg)


for _combination in COMBINATIONS:
    register_method(f"merge_{_combination}", Config, prepare=partial(prepare, combination=_combination),
                    description=f"PEFT add_weighted_adapter merge ({_combination}) of the selected LoRAs",
                    export=LORA, degenerates=("expert",) if _combination in ("cat", "linear", "svd") else ())(
        partial(build, combination=_combination))
