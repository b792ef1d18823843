"""HydraLoRA (Tian et al., NeurIPS 2024, arXiv 2404.19245; reference code Clin0212/HydraLoRA,
`HydraLoRA/peft/tuners/lora.py`): per adapted Linear one shared A and N B "heads", mixed by a dense
softmax router on the layer's input:

    g = softmax(W_r x)            (W_r: N x d_in, no bias; softmax in float32)
    y = W0 x + sum_i g_i s B_i A dropout(x)

The reference initialises A like nn.Linear (kaiming-uniform, a = sqrt(5)), every B_i to zero (the
model starts as the base model) and W_r like nn.Linear; its script fine-tunes the MLP projections
(gate/up/down) with r = 4, alpha = 32, dropout 0.05 and 4 heads. Its optional balance loss (off
by default, `blc_weight` 0) is the squared coefficient of variation of the per-example gate sums
(unbiased variance / (mean^2 + 1e-10), 0 when there is one entry), times `blc_weight`, each entry
weighted 1 +/- `blc_alpha` by task type; we sum it over the adapted Linears and, as the
benchmark's fits have one task type, use weight 1 (the reference's `blc_alpha` = 0 default).

The layer (`SharedALinear`) is this method's own subclass of `MoELinear`: h = x A^T is computed
once and repeated once per head, so the gates, scalings and the B product are the stacked layer's
(one matrix product over all heads, no loop).

From the library (this benchmark's extension, `init: library`, the default when LoRAs are
selected): the heads are the N selected LoRAs. A shared A cannot be any one of theirs, and an
average of A matrices trained from different random starts means nothing, so A is all of them
stacked (rank sum r_i) and head i is B_i placed in the columns of its own A_i (zeros elsewhere),
scaled by its s_i: head i then computes exactly LoRA i, a one-hot gate reproduces it, and one
LoRA gives that LoRA. Training lets every head use the whole shared A. The router starts as the
reference's. `init: fresh` (or no LoRAs given) is the reference initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loraocean import models
from loraocean.errors import ConfigError
from loraocean.models.architectures import linear_dims
from loraocean.moe.experts import Expert, fresh_expert
from loraocean.moe.layer import MoELinear, SoftmaxRouter, inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method

PARTS = ("mlp", "attention", "all")


@dataclass
class Config:
    init: str = "library"       # library: heads from the selected LoRAs; fresh: the reference's
    n_heads: int = 4            # fresh heads (the reference script's lora_nums)
    r: int = 4                  # fresh shared-A rank
    alpha: float = 32.0         # fresh LoRA alpha (scaling alpha / r)
    dropout: float = 0.05
    part: str = "mlp"           # the modules adapted: mlp (the reference script's), attention, all
    balance_coef: float = 0.0   # the reference's blc_weight (0: no balance loss)
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "init", self.init in ("library", "fresh"), "must be library or fresh")
        check_config(self, "n_heads", self.n_heads >= 1, "must be at least 1")
        check_config(self, "r", self.r >= 1, "must be at least 1")
        check_config(self, "alpha", self.alpha > 0, "must be positive")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_config(self, "part", self.part in PARTS, f"must be one of {', '.join(PARTS)}")
        check_config(self, "balance_coef", self.balance_coef >= 0, "must be at least 0")


class SharedALinear(MoELinear):
    """A frozen Linear plus N heads B_i over one shared A: lora_A is (r, d_in), lora_B (d_out, N r)
    with head i in columns i r .. (i + 1) r."""

    def __init__(self, base: nn.Module, As: list[torch.Tensor], Bs: list[torch.Tensor], scales: list[float],
                 dropout: float = 0.0):
        nn.Module.__init__(self)
        d_in, d_out = linear_dims(base)
        A = As[0] if As[0].numel() else torch.zeros(As[0].shape[0], d_in)
        B = torch.cat([b if b.numel() else torch.zeros(d_out, b.shape[1]) for b in Bs], 1)
        self.hold(base, A, B, [A.shape[0]] * len(Bs), scales, dropout)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return super().project(x).repeat(1, self.n_experts)  # (tokens, N r): h once per head


def heads(base, experts: list[Expert], cfg: Config) -> list[Expert]:
    """The N heads the model holds, as experts that all carry the shared A (see the module
    docstring): from the selected LoRAs, or fresh."""
    targets = models.targets(base, cfg.part)
    if cfg.init == "fresh" or not experts:
        gen = torch.Generator().manual_seed(cfg.seed)
        shared = fresh_expert(base, "shared", targets, cfg.r, cfg.alpha, gen)
        return [Expert(f"head{i}", dict(shared.A), {m: torch.zeros_like(b) for m, b in shared.B.items()},
                       dict(shared.scale)) for i in range(cfg.n_heads)]
    experts = [e.only(targets) for e in experts]
    modules = list(dict.fromkeys(m for e in experts for m in e.modules))
    if not modules:
        raise ConfigError(f"hydralora ({cfg.part}): the selected LoRAs adapt none of {targets}")
    out = [Expert(e.name, source=e.source, task=e.task) for e in experts]
    for m in modules:
        d_in, d_out = linear_dims(base.get_submodule(m))
        blocks = [e.A.get(m, torch.zeros(0, d_in)) for e in experts]
        shared = torch.cat(blocks, 0)
        start = 0
        for e, head, block in zip(experts, out, blocks):
            B = torch.zeros(d_out, shared.shape[0])
            if m in e.B:
                B[:, start:start + block.shape[0]] = e.B[m]
            head.A[m], head.B[m], head.scale[m] = shared, B, e.scale.get(m, 0.0)
            start += block.shape[0]
    return out


def prepare(base, tokenizer, experts, cfg: Config, ctx):
    return heads(base, experts, cfg)


def balance_loss(gates: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The reference's cv_squared of one layer's per-example gate sums (batch, tokens, N) -> a
    scalar (padding excluded from the sums)."""
    gates = gates.float()
    if mask is not None:
        gates = gates * mask[..., None].to(gates.dtype)
    z = gates.sum(-2).flatten()
    if z.numel() == 1:
        return z.new_zeros(())
    return z.var() / (z.mean() ** 2 + 1e-10)


def aux_loss(model: MoEModel, cfg: Config) -> torch.Tensor | None:
    if cfg.balance_coef == 0:
        return None
    losses = [balance_loss(model.gates_of(layer), model.attention_mask) for layer in model.layers().values()
              if layer.last_gates is not None]
    return cfg.balance_coef * torch.stack(losses).sum() if losses else None


@register_method("hydralora", Config, trains=True, prepare=prepare, aux_loss=aux_loss, train_cost=1.3,
                 cite="Tian et al., NeurIPS 2024, arXiv 2404.19245; Clin0212/HydraLoRA",
                 degenerates=("base", "expert"))
def build(base, experts, cfg: Config) -> MoEModel:
    """HydraLoRA: one shared A and N B heads per Linear, dense softmax router (optional cv^2 loss)."""
    if not experts:
        raise ConfigError("hydralora is built on the heads its prepare step makes (`fit` runs it)")
    for m in experts[0].modules:
        if any(e.rank(m) != experts[0].rank(m) or not torch.equal(e.A[m], experts[0].A[m]) for e in experts):
            raise ConfigError("hydralora's heads share one A per module; give it the heads its prepare step "
                              "makes from the selected LoRAs (`fit` runs it), not the LoRAs themselves")
    freeze_base(base)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        layers = inject(base, experts, dropout=cfg.dropout, layer=lambda name, *args: SharedALinear(*args),
                        router=lambda layer: SoftmaxRouter(layer.d_in, layer.n_experts).to(layer.lora_A.device))
    for layer in layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    return MoEModel(base, cfg, experts)
