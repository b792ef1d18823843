"""MixLoRA (Li et al., arXiv 2404.15159; reference code TUDB-Labs/MixLoRA `mixlora/model.py`,
`mixlora/config.py`, and TUDB-Labs/MoE-PEFT's `mixlora` adapter `moe_peft/adapters/mixlora/`): a
sparse mixture of experts in place of each MLP block, every expert being the frozen MLP with its
own LoRA on the MLP's projections, plus one plain LoRA on the attention projections (outside the
experts). Per block, with x the block's input:

    p = softmax(W_g x)           (W_g: E x d, no bias, init N(0, 0.02); product and softmax in float32)
    w, idx = top-k of p          (k = 2 of E = 8), w renormalised to sum to 1
    MLP(x) = sum_j w_j MLP_{idx_j}(x),  MLP_e = the frozen MLP with expert e's LoRA on its Linears

and the Mixtral load-balancing loss over the router outputs of all blocks taken together (as
MoE-PEFT's `_mixtral_load_balancing_loss_func` does with the blocks' logits concatenated), padding
excluded: f[j, i] = share of tokens whose j-th choice is expert i, P_i = mean of p_i,
loss = coef E sum_{j,i} f[j, i] P_i, coef 0.01 (the README's `router_aux_loss_coef`; the code
falls back to 0.001 when a config omits it). Reference defaults: r = 8, alpha = 16, dropout 0.05
(experts and attention LoRA alike), jitter noise 0 (not implemented here).

How it is computed (no loop over experts, and the frozen MLP never runs once per expert): the
MLP's input-side Linears (gate/up, fc1, c_fc, ...) become `EntryLinear`s: W0 x once per token,
plus each of the token's k chosen experts' LoRA (the stacked experts' h = x A_cat^T, masked to the
chosen expert's columns per slot), giving k outputs per token; the activation between runs on
those k copies; the output-side Linear (`ExitLinear`) mixes them: W0 (sum_j w_j z_j) + sum_j w_j
s B_{idx_j} A_{idx_j} z_j, which equals sum_j w_j (W0 z_j + b + LoRA_j(z_j)) because the weights sum
to 1. So the frozen MLP's three products run once per token, like the base model's (the reference
runs the output projection k times; a dense mixture would run the whole MLP E times); only the
elementwise activation runs k times. The k outputs travel between the Linears as an extra
dimension (..., k, d_ff): every supported family's MLP is Linears around elementwise operations,
and the last Linear the family table lists for the MLP is its output projection.

From the library (this benchmark's extension, `init: library`): the experts are the selected
LoRAs' MLP parts, and the attention LoRA starts as the uniform average of their attention parts
(their A stacked, their B side by side times s_e / k: PEFT's exact "cat" merge), trained as one
LoRA. One selected LoRA gives exactly that LoRA. The routers start as the reference's. `init:
fresh` (or no LoRAs given) is the reference initialisation: E fresh LoRAs on the MLP and one on
the attention projections (A kaiming-uniform, B zero: the model starts as the base model).

The experts the model holds (`prepare`): the attention LoRA first (named "attention"), then the E
MLP experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loraocean import models
from loraocean.errors import ConfigError
from loraocean.models.architectures import FAMILIES, linear_dims, matches
from loraocean.moe.experts import Expert, fresh_expert
from loraocean.moe.layer import FixedGates, MoELinear, inject, moe_layers
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method

ATTENTION = "attention"  # the name of the attention LoRA among the held experts


@dataclass
class Config:
    init: str = "library"       # library: experts from the selected LoRAs; fresh: the reference's
    n_experts: int = 8          # fresh experts
    top_k: int = 2
    r: int = 8                  # fresh LoRAs' rank (experts and attention LoRA)
    alpha: float = 16.0         # fresh LoRAs' alpha (scaling alpha / r)
    dropout: float = 0.05
    router_init_range: float = 0.02  # std of the routers' normal initialisation
    balance_coef: float = 0.01  # router_aux_loss_coef (0: no balance loss)
    attention: bool = True      # the attention LoRA outside the experts
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "init", self.init in ("library", "fresh"), "must be library or fresh")
        check_config(self, "n_experts", self.n_experts >= 1, "must be at least 1")
        check_config(self, "top_k", self.top_k >= 1, "must be at least 1")
        check_config(self, "r", self.r >= 1, "must be at least 1")
        check_config(self, "alpha", self.alpha > 0, "must be positive")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_config(self, "router_init_range", self.router_init_range > 0, "must be positive")
        check_config(self, "balance_coef", self.balance_coef >= 0, "must be at least 0")


def mlp_parts(base) -> tuple[list[str], str]:
    """The family's MLP Linear names: the input side, and the output projection (listed last)."""
    family = FAMILIES.get(getattr(base.config, "model_type", ""))
    if family is None:
        raise ConfigError(f"mixlora needs to know the MLP of model type {base.config.model_type!r} "
                          "(models/architectures.py lists the supported families)")
    return list(family.mlp[:-1]), family.mlp[-1]


def merged_attention(experts: list[Expert], targets) -> Expert | None:
    """The uniform average of the experts' attention parts as one LoRA (A stacked, B side by side
    times s_e / k, scaling 1), or None when none of them adapts attention."""
    parts = [e.only(targets) for e in experts]
    modules = list(dict.fromkeys(m for e in parts for m in e.modules))
    if not modules:
        return None
    out = Expert(ATTENTION, source="merged")
    for m in modules:
        have = [e for e in parts if m in e.A]
        out.A[m] = torch.cat([e.A[m] for e in have], 0)
        out.B[m] = torch.cat([e.B[m] * (e.scale[m] / len(parts)) for e in have], 1)
        out.scale[m] = 1.0
    return out


def held_experts(base, experts: list[Expert], cfg: Config) -> list[Expert]:
    """[attention LoRA] + the E MLP experts (see the module docstring)."""
    mlp, attention = models.targets(base, "mlp"), models.targets(base, "attention")
    mlp_parts(base)  # a family whose MLP is known
    if cfg.init == "fresh" or not experts:
        gen = torch.Generator().manual_seed(cfg.seed)
        attn = fresh_expert(base, ATTENTION, attention, cfg.r, cfg.alpha, gen) if cfg.attention else None
        held = [fresh_expert(base, f"expert{i}", mlp, cfg.r, cfg.alpha, gen) for i in range(cfg.n_experts)]
    else:
        attn = merged_attention(experts, attention) if cfg.attention else None
        held = [e.only(mlp) for e in experts]
        if not any(e.modules for e in held):
            raise ConfigError(f"mixlora: the selected LoRAs adapt none of the MLP projections {mlp}")
    return ([attn] if attn is not None else []) + held


def prepare(base, tokenizer, experts, cfg: Config, ctx):
    return held_experts(base, experts, cfg)


class BlockRouter(nn.Module):
    """One MLP block's router. `route(x)` computes the top-k choice of the block's input once (the
    block's Linears that read x share it) and keeps it for the block's output Linear and for the
    balance loss: `chosen` (tokens, k) expert numbers among the held experts, `weights` (tokens, k)
    float32, `probs` (tokens, E) float32, `gates` (..., held) the dense gates (routing statistics)."""

    def __init__(self, d_in: int, n_experts: int, top_k: int, std: float, offset: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, dtype=torch.float32))
        nn.init.normal_(self.weight, mean=0.0, std=std)
        self.top_k = min(top_k, n_experts)
        self.offset = offset  # 1 when the held experts start with the attention LoRA
        self.routed: torch.Tensor | None = None  # the input last routed (released by the output Linear)
        self.chosen = self.weights = self.probs = self.gates = None
        self.made: dict = {}  # per-slot column factors of this routing, by the layers' signatures

    def route(self, x: torch.Tensor) -> None:
        if x is self.routed:
            return
        flat = x.reshape(-1, x.shape[-1])
        probs = F.linear(flat.float(), self.weight).softmax(-1)  # float32, as the reference
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        self.routed, self.probs, self.weights, self.chosen = x, probs, weights, chosen + self.offset
        self.made = {}
        dense = torch.zeros(flat.shape[0], self.weight.shape[0] + self.offset, device=x.device)
        self.gates = dense.scatter(-1, self.chosen, weights).view(*x.shape[:-1], -1)


class _Routed(MoELinear):
    """A Linear of an MLP block whose router lives on the model (`router_of`), not in the layer."""

    @property
    def block(self) -> BlockRouter:
        return self.__dict__["_block"]

    def slot_columns(self, dtype, weighted: bool = False) -> torch.Tensor:
        """(tokens, k, R): per chosen slot, its expert's columns times its scaling (and routing
        weight); made once per routing for all the block's Linears of one signature (ranks and
        scalings: equal for fresh experts)."""
        if "_signature" not in self.__dict__:  # read once (after any checkpoint was loaded)
            self.__dict__["_signature"] = self.signature()
        block = self.block
        key = (self.__dict__["_signature"], dtype, weighted)
        if key not in block.made:
            one_hot = F.one_hot(block.chosen, self.n_experts).to(dtype)
            if weighted:
                one_hot = one_hot * block.weights.to(dtype)[..., None]
            block.made[key] = (one_hot * self.scales.to(dtype)).index_select(-1, self.owner)
        return block.made[key]


class EntryLinear(_Routed):
    """An input-side Linear: (..., d_in) -> (..., k, d_out), one output per chosen expert."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.block.route(x)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        y = self.base(x)  # the frozen product once per token
        h = self.project(F.dropout(x, self.dropout, self.training) if self.dropout else x)  # (tokens, R)
        mixed = h[:, None, :] * self.slot_columns(h.dtype)  # (tokens, k, R)
        B = self.lora_B if self.lora_B.dtype == y.dtype else self.lora_B.to(y.dtype)
        out = (mixed.to(y.dtype).reshape(-1, mixed.shape[-1]) @ B.t()).view(x.shape[0], -1, y.shape[-1])
        out.add_(y[:, None, :])
        self.last_gates = self.block.gates
        return out.view(*lead, out.shape[1], -1)


class ExitLinear(_Routed):
    """The output projection: (..., k, d_in) -> (..., d_out), the chosen experts mixed by weight."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        block = self.block
        lead, k = z.shape[:-2], z.shape[-2]
        z = z.reshape(-1, k, z.shape[-1])
        w = block.weights.to(z.dtype)
        y = self.base((w[..., None] * z).sum(1))  # W0 (sum_j w_j z_j) + b: the frozen product once
        h = self.project((F.dropout(z, self.dropout, self.training) if self.dropout else z).reshape(-1, z.shape[-1]))
        h = h.view(z.shape[0], k, -1)
        mixed = (h * self.slot_columns(h.dtype, weighted=True)).sum(1)  # (tokens, R)
        B = self.lora_B if self.lora_B.dtype == y.dtype else self.lora_B.to(y.dtype)
        mixed = mixed.to(y.dtype)
        y = y.addmm_(mixed, B.t()) if self.in_place else y + mixed @ B.t()
        self.last_gates = block.gates
        block.routed = None  # the block's input is not kept alive past the block
        return y.view(*lead, -1)


def mlp_blocks(modules: list[str], base) -> dict[str, tuple[list[str], str]]:
    """parent path -> (input-side Linears, output Linear) of each MLP block the experts adapt."""
    entries, exit_name = mlp_parts(base)
    blocks: dict[str, tuple[list[str], list[str]]] = {}
    for m in modules:
        ins, outs = blocks.setdefault(m.rpartition(".")[0], ([], []))
        (outs if matches(m, [exit_name]) else ins).append(m)
    for parent, (ins, outs) in blocks.items():
        if len(outs) != 1 or not ins:
            raise ConfigError(f"mixlora: block {parent!r} needs its MLP input Linears {entries} and output "
                              f"Linear {exit_name!r} adapted by every expert (it has {ins + outs})")
    return {parent: (ins, outs[0]) for parent, (ins, outs) in blocks.items()}


def balance_loss(probs: list[torch.Tensor], chosen: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """Mixtral's loss over all blocks' router outputs together (without the coefficient):
    E sum_{j,i} f[j, i] P_i; `probs` (tokens, E) and `chosen` (tokens, k, numbered from 0) per block,
    tokens where `mask` is 0 left out."""
    p = torch.cat(probs)
    n_experts = p.shape[-1]
    one_hot = F.one_hot(torch.cat(chosen), n_experts).float()  # (blocks x tokens, k, E)
    if mask is None:
        w = torch.ones(p.shape[0], device=p.device)
    else:
        w = mask.reshape(-1).to(device=p.device, dtype=p.dtype).repeat(len(probs))
    total = w.sum().clamp_min(1e-20)
    f = (one_hot * w[:, None, None]).sum(0) / total  # (k, E)
    P = (p * w[:, None]).sum(0) / total              # (E,)
    return n_experts * (f * P[None]).sum()


def aux_loss(model: MoEModel, cfg: Config) -> torch.Tensor | None:
    routers = [r for r in getattr(model, "routers", []) if r.probs is not None]
    if cfg.balance_coef == 0 or not routers:
        return None
    return cfg.balance_coef * balance_loss([r.probs for r in routers], [r.chosen - r.offset for r in routers],
                                           model.attention_mask)


@register_method("mixlora", Config, trains=True, prepare=prepare, aux_loss=aux_loss, train_cost=1.6,
                 cite="Li et al., arXiv 2404.15159; TUDB-Labs/MixLoRA and TUDB-Labs/MoE-PEFT (mixlora)",
                 degenerates=("base", "expert"))
def build(base, experts, cfg: Config) -> MoEModel:
    """MixLoRA: top-k routed experts (frozen MLP + LoRA each) per MLP block, attention LoRA, Mixtral loss."""
    offset = int(bool(experts) and experts[0].name == ATTENTION)
    mlp_experts = experts[offset:]
    if not mlp_experts:
        raise ConfigError("mixlora is built on the experts its prepare step makes (`fit` runs it)")
    mlp, attention = models.targets(base, "mlp"), models.targets(base, "attention")
    if any(not matches(m, mlp) for e in mlp_experts for m in e.modules) or \
            any(not matches(m, attention) for e in experts[:offset] for m in e.modules):
        raise ConfigError("mixlora's experts adapt the MLP only and its attention LoRA the attention only; "
                          "give it the experts its prepare step makes (`fit` runs it)")
    freeze_base(base)
    if offset:
        gates = [1.0] + [0.0] * len(mlp_experts)
        inject(base, experts, attention, cfg.dropout, router=lambda layer: FixedGates(gates).to(layer.lora_A.device))
    position = {name: i for i, (name, _) in enumerate(base.named_modules())}
    modules = sorted({m for e in mlp_experts for m in e.modules}, key=lambda m: position.get(m, -1))
    blocks = mlp_blocks(modules, base)  # in the model's order: routers.<i> is the i-th block
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        routers = {parent: BlockRouter(linear_dims(base.get_submodule(ins[0]))[0], len(mlp_experts), cfg.top_k,
                                       cfg.router_init_range, offset)
                   for parent, (ins, _) in blocks.items()}
    exits = {out for _, out in blocks.values()}

    def make(name, *args):
        layer = (ExitLinear if name in exits else EntryLinear)(*args)
        layer.__dict__["_block"] = routers[name.rpartition(".")[0]]
        return layer

    inject(base, experts, mlp, cfg.dropout, layer=make)
    for i, layer in enumerate(moe_layers(base).values()):
        layer.index = i  # one numbering over both injections
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    model = MoEModel(base, cfg, experts)
    model.routers = nn.ModuleList(routers.values()).to(model.device)
    return model
