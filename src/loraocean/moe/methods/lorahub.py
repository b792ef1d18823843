"""LoraHub (Huang et al., arXiv 2307.13269): one LoRA A' = sum_i w_i A_i, B' = sum_i w_i B_i
(A and B combined separately, not sum of w_i B_i A_i), the weights w searched without gradients
(nevergrad NGOpt, 40 evaluations, start 0, bounds [-1.5, 1.5]) to minimise the few-shot loss
+ 0.05 * mean|w|. Experts must share ranks per module; their scalings must agree (checked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loraocean.batching import encode, pad_batch
from loraocean.errors import ConfigError, MissingPackageError
from loraocean.moe.experts import Expert
from loraocean.moe.export import LORA
from loraocean.moe.methods.baselines import fixed
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    budget: int = 40
    bound: float = 1.5
    l1: float = 0.05
    n_shots: int = 5
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "budget", self.budget >= 1, "must be at least 1")
        check_config(self, "bound", self.bound > 0, "must be positive")
        check_config(self, "l1", self.l1 >= 0, "must be at least 0")
        check_config(self, "n_shots", self.n_shots >= 1, "must be at least 1")


def combine(experts: list[Expert], w) -> Expert:
    out = Expert(name="lorahub", source="lorahub")
    for m in experts[0].modules:
        out.A[m] = sum(float(wi) * e.A[m] for wi, e in zip(w, experts))
        out.B[m] = sum(float(wi) * e.B[m] for wi, e in zip(w, experts))
        out.scale[m] = experts[0].scale[m]
    return out


def _check(experts: list[Expert]) -> None:
    if len(experts) < 2:
        raise ConfigError("lorahub needs at least two library LoRAs as experts")
    first = experts[0]
    for e in experts[1:]:
        if set(e.modules) != set(first.modules) or any(
                e.A[m].shape != first.A[m].shape or abs(e.scale[m] - first.scale[m]) > 1e-9 for m in first.modules):
            raise ConfigError(f"lorahub needs experts with the same modules, ranks and alpha; "
                              f"{e.name!r} differs from {first.name!r}")


def search(base, tokenizer, experts, cfg: Config, ctx):
    try:
        import nevergrad as ng
    except ImportError:
        raise MissingPackageError("nevergrad (LoraHub's optimiser)", "pip install nevergrad") from None
    from loraocean.moe.layer import remove

    _check(experts)
    shots = ctx.train[: cfg.n_shots]
    batch = pad_batch([encode(ex, tokenizer, max_length=ctx.max_length) for ex in shots], ctx.pad_id)
    model = fixed(base, [combine(experts, [0.0] * len(experts))], [1.0], cfg)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    layers = model.layers()

    @torch.no_grad()
    def objective(w) -> float:
        merged = combine(experts, w)
        for name, layer in layers.items():
            layer.lora_A.copy_(merged.A[name])
            layer.lora_B.copy_(merged.B[name])
        loss = model(**batch).loss.item()
        return loss + cfg.l1 * sum(abs(float(x)) for x in w) / len(w)

    param = ng.p.Array(init=[0.0] * len(experts)).set_bounds(-cfg.bound, cfg.bound)
    param.random_state.seed(cfg.seed)
    optimizer = ng.optimizers.NGOpt(parametrization=param, budget=cfg.budget)
    best = optimizer.minimize(objective).value
    remove(base)
    ctx.notes["lorahub_weights"] = {e.name: float(w) for e, w in zip(experts, best)}
    return [combine(experts, best)]


@register_method("lorahub", Config, prepare=search, export=LORA, cite="Huang et al., arXiv 2307.13269")
def build(base, experts, cfg: Config):
    """LoraHub: gradient-free search of one weight per LoRA, merged as sum w A, sum w B."""
    if len(experts) != 1:
        raise ConfigError("a lorahub checkpoint holds exactly one (combined) expert")
    return fixed(base, experts, [1.0], cfg)
