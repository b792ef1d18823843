"""MoLA (Gao et al., "Higher Layers Need More LoRA Experts", arXiv 2402.08562; reference code
GCYZSL/MoLA, `src/mola_lora_hacked.py` `Linear_MoE` and `src/mola_modeling_llama_hacked.py`; also
TUDB-Labs/MoE-PEFT's `mola` adapter): LoRA experts on every adapted Linear, with an expert count
that grows from the bottom decoder layers to the top, and a top-k router per Linear:

    p = softmax(W_r x)                  (W_r: E_l x d_in, no bias, kaiming-uniform; softmax in float32)
    g = top-k of p, renormalised to sum to 1
    y = W0 x + sum_e g_e s B_e A_e dropout(x)

The reference script trains all seven projections of LLaMA with r = 8, alpha = 16, dropout 0.05,
top-2, and 2, 4, 6, 8 experts in each quarter of the 32 layers ("2468", the paper's best). Its
balance loss (`obalance`, off by default, weight 0.001) is computed per decoder layer over the
router outputs of that layer's adapted Linears together: f_i = the share of the top-k choices that
went to expert i, P_i = the mean probability of expert i, loss = E_l sum_i f_i P_i, summed over the
decoder layers. We keep it on (`balance_coef` 0.001; 0 turns it off, as the reference's default)
and leave padding tokens out of f and P (the reference counts them).

`layer_experts` gives the counts of equal groups of decoder layers, bottom to top: layer l of L is
in group floor(l G / L). Experts are numbered; a layer with count c holds experts 0 .. c-1, so
expert e lives only in the layers whose count exceeds e (its `Expert` adapts just those modules).

From the library (this benchmark's extension, `init: library`): the selected LoRAs, best-ranked
first, are the experts; a layer holds the first min(c, k) of the k selected LoRAs (the best-ranked
ones in the bottom layers, more of them higher up). Routers start as the reference's. `init:
fresh` (or no LoRAs given) is the reference initialisation: max(layer_experts) fresh LoRAs (A
kaiming-uniform, B zero: the model starts as the base model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from loraocean import models
from loraocean.errors import ConfigError
from loraocean.moe.experts import Expert, fresh_expert
from loraocean.moe.layer import SoftmaxRouter, inject, top_k_renormalise
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method

PARTS = ("all", "attention", "mlp")


@dataclass
class Config:
    init: str = "library"       # library: experts from the selected LoRAs; fresh: the reference's
    layer_experts: list[int] = field(default_factory=lambda: [2, 4, 6, 8])  # bottom to top
    top_k: int = 2
    r: int = 8                  # fresh experts' rank
    alpha: float = 16.0         # fresh experts' LoRA alpha (scaling alpha / r)
    dropout: float = 0.05
    part: str = "all"           # the modules adapted: all (the reference's), attention, mlp
    balance_coef: float = 0.001  # the reference's router_aux_loss_coef (0: no balance loss)
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "init", self.init in ("library", "fresh"), "must be library or fresh")
        check_config(self, "layer_experts", bool(self.layer_experts) and min(self.layer_experts) >= 1,
                     "must be a non-empty list of counts of at least 1")
        check_config(self, "top_k", self.top_k >= 1, "must be at least 1")
        check_config(self, "r", self.r >= 1, "must be at least 1")
        check_config(self, "alpha", self.alpha > 0, "must be positive")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_config(self, "part", self.part in PARTS, f"must be one of {', '.join(PARTS)}")
        check_config(self, "balance_coef", self.balance_coef >= 0, "must be at least 0")


def decoder_layer(module: str) -> int:
    """The decoder layer a module belongs to: the first number in its dotted path
    (`model.layers.3.mlp.up_proj` -> 3, `transformer.h.0.attn.c_attn` -> 0)."""
    for part in module.split("."):
        if part.isdigit():
            return int(part)
    raise ConfigError(f"mola: {module!r} is in no numbered decoder layer; it needs per-layer expert counts")


def counts(modules: list[str], layer_experts: list[int], cap: int | None = None) -> dict[str, int]:
    """Each module's expert count: its decoder layer's group's count (capped at `cap`)."""
    n_layers = max(decoder_layer(m) for m in modules) + 1
    groups = len(layer_experts)
    out = {m: layer_experts[decoder_layer(m) * groups // n_layers] for m in modules}
    return {m: min(c, cap) for m, c in out.items()} if cap is not None else out


def keep(expert: Expert, modules) -> Expert:
    modules = [m for m in expert.modules if m in set(modules)]
    return Expert(expert.name, {m: expert.A[m] for m in modules}, {m: expert.B[m] for m in modules},
                  {m: expert.scale[m] for m in modules}, expert.source, expert.task)


def layered_experts(base, experts: list[Expert], cfg: Config) -> list[Expert]:
    """The experts the model holds: expert e restricted to the modules whose count exceeds e."""
    targets = models.targets(base, cfg.part)
    if cfg.init == "fresh" or not experts:
        gen = torch.Generator().manual_seed(cfg.seed)
        experts = [fresh_expert(base, f"expert{i}", targets, cfg.r, cfg.alpha, gen)
                   for i in range(max(cfg.layer_experts))]
        cap = None
    else:
        experts = [e.only(targets) for e in experts]
        cap = len(experts)
    modules = list(dict.fromkeys(m for e in experts for m in e.modules))
    if not modules:
        raise ConfigError(f"mola ({cfg.part}): the selected LoRAs adapt none of {targets}")
    count = counts(modules, cfg.layer_experts, cap)
    return [keep(e, [m for m in modules if count[m] > i]) for i, e in enumerate(experts)]


def prepare(base, tokenizer, experts, cfg: Config, ctx):
    return layered_experts(base, experts, cfg)


class MolaRouter(SoftmaxRouter):
    """Top-k over the layer's E_l experts (the first E_l of the model's E, those with a nonzero
    rank here); the gates come out padded with zeros to E. Keeps the softmax of the last forward
    (`last_probs`, float32, E_l wide) for the balance loss."""

    def __init__(self, layer, top_k: int):
        present = sum(r > 0 for r in layer.ranks)
        if any(r == 0 for r in layer.ranks[:present]) or any(layer.ranks[present:]):
            raise ConfigError("mola: a layer must hold the first experts (0 .. c-1); give it the experts its "
                              "prepare step makes (`fit` runs it)")
        super().__init__(layer.d_in, present, top_k=min(top_k, present))
        self.n_total = layer.n_experts
        self.last_probs: torch.Tensor | None = None

    def forward(self, x, h, layer):
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        probs = F.linear(x, weight).float().softmax(-1)
        self.last_probs = probs
        gates = top_k_renormalise(probs, self.top_k)
        return F.pad(gates, (0, self.n_total - gates.shape[-1]))


def layer_balance(probs: list[torch.Tensor], top_k: int, mask: torch.Tensor | None) -> torch.Tensor:
    """One decoder layer's loss from its Linears' probabilities (each (batch, tokens, E_l)):
    E_l sum_i f_i P_i, f the share of the top-k choices of expert i, P its mean probability
    (tokens where `mask` is 0 left out)."""
    p = torch.stack([q.reshape(-1, q.shape[-1]) for q in probs])  # (linears, tokens, E_l)
    w = torch.ones(p.shape[:2], device=p.device) if mask is None else \
        mask.reshape(1, -1).to(device=p.device, dtype=p.dtype).expand(p.shape[0], -1)
    n_experts = p.shape[-1]
    chosen = F.one_hot(p.topk(min(top_k, n_experts), dim=-1).indices, n_experts).sum(-2).float()
    f = (chosen * w[..., None]).sum((0, 1)) / (chosen.sum(-1) * w).sum().clamp_min(1e-20)
    P = (p * w[..., None]).sum((0, 1)) / w.sum().clamp_min(1e-20)
    return n_experts * (f * P).sum()


def aux_loss(model: MoEModel, cfg: Config) -> torch.Tensor | None:
    if cfg.balance_coef == 0:
        return None
    by_layer: dict[int, list[torch.Tensor]] = {}
    for name, layer in model.layers().items():
        if isinstance(layer.router, MolaRouter) and layer.router.last_probs is not None:
            by_layer.setdefault(decoder_layer(name), []).append(layer.router.last_probs)
    if not by_layer:
        return None
    mask = model.attention_mask
    return cfg.balance_coef * torch.stack([layer_balance(p, cfg.top_k, mask) for p in by_layer.values()]).sum()


@register_method("mola", Config, trains=True, prepare=prepare, aux_loss=aux_loss, train_cost=1.5,
                 cite="Gao et al., arXiv 2402.08562; GCYZSL/MoLA and TUDB-Labs/MoE-PEFT (mola)",
                 degenerates=("base", "expert"))
def build(base, experts, cfg: Config) -> MoEModel:
    """MoLA: LoRA experts on every Linear, more of them in higher layers, top-k router per Linear."""
    if not experts:
        raise ConfigError("mola is built on the experts its prepare step makes (`fit` runs it)")
    freeze_base(base)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        layers = inject(base, experts, dropout=cfg.dropout,
                        router=lambda layer: MolaRouter(layer, cfg.top_k).to(layer.lora_A.device))
    for layer in layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    return MoEModel(base, cfg, experts)
