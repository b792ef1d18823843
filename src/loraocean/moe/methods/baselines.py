"""Baselines with fixed gates: the base model and the target task's own LoRA (the references a
study evaluates as they are), the uniform average of the selected LoRAs, and the single best
selected LoRA (by dev score)."""

from __future__ import annotations

from dataclasses import dataclass

from loraocean.errors import ConfigError
from loraocean.moe.export import LORA
from loraocean.moe.layer import FixedGates, inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


def fixed(base, experts, weights, cfg) -> MoEModel:
    """`experts` mixed with the same `weights` at every token of every layer."""
    freeze_base(base)
    inject(base, experts, router=lambda layer: FixedGates(weights).to(layer.lora_A.device))
    return MoEModel(base, cfg, experts)


@dataclass
class BaseConfig:
    pass


def _no_experts(base, tokenizer, experts, cfg, ctx):
    return []


@register_method("base", BaseConfig, prepare=_no_experts, reference=True, base_model=True, degenerates=("base",))
def build_base(base, experts, cfg) -> MoEModel:
    """The base model alone (no expert)."""
    freeze_base(base)
    return MoEModel(base, cfg, [])


@dataclass
class TargetLoraConfig:
    pass


@register_method("target_lora", TargetLoraConfig, reference=True, target_expert=True, export=LORA,
                 degenerates=("expert",))
def build_target_lora(base, experts, cfg) -> MoEModel:
    """The target task's own library LoRA (an in-task reference, not cross-task transfer)."""
    if len(experts) != 1:
        raise ConfigError("target_lora holds exactly one expert: the target task's own library LoRA")
    return fixed(base, experts, [1.0], cfg)


@dataclass
class UniformConfig:
    pass


@register_method("uniform", UniformConfig, baseline=True, export=LORA, degenerates=("expert",))
def build_uniform(base, experts, cfg) -> MoEModel:
    """Uniform average of the selected LoRAs' outputs (gate 1/E everywhere)."""
    if not experts:
        raise ConfigError("uniform needs library LoRAs as experts (give --experts)")
    return fixed(base, experts, [1.0 / len(experts)] * len(experts), cfg)


@dataclass
class SingleConfig:
    dev_limit: int = 100  # dev examples used to rank the experts
    batch_size: int = 16

    def __post_init__(self):
        check_types(self)
        check_config(self, "dev_limit", self.dev_limit >= 1, "must be at least 1")
        check_config(self, "batch_size", self.batch_size >= 1, "must be at least 1")


def pick_best(base, tokenizer, experts, cfg: SingleConfig, ctx):
    """The expert with the best dev score under the task's metric (lm-eval convention)."""
    from loraocean.evaluation import evaluate
    from loraocean.moe.layer import remove

    if not experts:
        raise ConfigError("single needs library LoRAs as experts (give --experts)")
    dev = ctx.dev[: cfg.dev_limit]
    if not dev:  # a task without a dev split: rank on training examples (recorded in the card)
        dev = ctx.train[: cfg.dev_limit]
        ctx.notes["ranked_on"] = "train"
    scores = []
    for expert in experts:
        model = fixed(base, [expert], [1.0], cfg)
        scores.append(evaluate(model, tokenizer, ctx.spec, dev, batch_size=cfg.batch_size).value)
        remove(base)
    ctx.notes["dev_scores"] = {e.name: s for e, s in zip(experts, scores)}
    best = max(range(len(experts)), key=lambda i: scores[i])  # first best on ties
    return [experts[best]]


@register_method("single", SingleConfig, prepare=pick_best, export=LORA, degenerates=("expert",))
def build_single(base, experts, cfg) -> MoEModel:
    """The single best selected LoRA by dev score."""
    if len(experts) != 1:
        raise ConfigError("single holds exactly one expert")
    return fixed(base, experts, [1.0], cfg)
