"""LoRAMoE (Dou et al., arXiv 2312.09979): LoRA experts on the FFN projections only, a dense
softmax router per adapted Linear (float32 weight and softmax), and the localized balancing
constraint (LBC).

LBC per adapted Linear, with gates g (batch x tokens x E) and a 0/1 task_type per example:
Q = g summed over the (non-padding) tokens (batch x E);
I[b, i] = 1 + delta if (i < E/2 and task_type_b = 1) or (i >= E/2 and task_type_b = 0), else 1 - delta;
L = beta * Var(I*Q) / (Mean(I*Q)^2 + 1e-10) over all batch x E entries (unbiased variance).
The losses of all adapted Linears are summed. task_type 1 marks world-knowledge examples: the
method's `batch_hook` takes the example's metadata["task_type"] when present, else 1 for tasks of
the "knowledge" category and 0 for the others.

The localized part needs two kinds of example: the paper mixes world-knowledge data into the
fine-tuning set so that one half of the experts keeps it. When the fit's examples are all of one
type (the usual benchmark fit on one target), the hook sets no task_type and, as in the reference
(its constraint needs both types; its released script sets the weight to 0), no auxiliary loss is
added. `balance_one_type=True` adds instead the plain balance variant, I = 1: beta * squared
coefficient of variation of Q, pushing toward equal use of all experts (our earlier default, an
extension). Experts are the selected library LoRAs (their FFN parts) or, with no experts given,
`n_experts` fresh LoRAs (A kaiming, B zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loraocean import models
from loraocean.moe.experts import fresh_expert
from loraocean.moe.layer import SoftmaxRouter, inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    n_experts: int = 8          # fresh experts, used when no library LoRAs are given
    r: int = 4                  # rank of fresh experts
    alpha: float = 32.0         # LoRA alpha of fresh experts (scaling alpha / r)
    dropout: float = 0.05
    beta: float = 0.1           # LBC weight (paper value unverified)
    delta: float = 0.1          # LBC importance margin (paper value unverified)
    train_experts: bool = True  # False: routers only
    balance_one_type: bool = False  # a fit of one task type: add the plain balance loss (not the reference)
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "n_experts", self.n_experts >= 1, "must be at least 1")
        check_config(self, "r", self.r >= 1, "must be at least 1")
        check_config(self, "alpha", self.alpha > 0, "must be positive")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_config(self, "beta", self.beta >= 0, "must be at least 0")
        check_config(self, "delta", 0 <= self.delta < 1, "must be in [0, 1)")


def lbc_loss(gates: torch.Tensor, task_type: torch.Tensor | None, mask: torch.Tensor | None,
             beta: float, delta: float) -> torch.Tensor:
    """The localized balancing constraint of one layer's gates (batch, tokens, E) (see the module
    docstring), or the sum of the per-layer constraints of stacked gates (layers, batch, tokens, E);
    with `task_type` None (one type in the whole fit) the plain balance variant, importance 1."""
    gates = gates.float()
    if mask is not None:
        gates = gates * mask[..., None].to(gates.dtype)
    Q = gates.sum(-2)  # ([layers,] batch, E)
    if task_type is not None:
        n_experts = Q.shape[-1]
        first_half = torch.arange(n_experts, device=Q.device) < n_experts / 2
        knowledge = task_type.to(Q.device).bool()[:, None]
        favoured = (first_half[None] & knowledge) | (~first_half[None] & ~knowledge)
        Q = torch.where(favoured, 1.0 + delta, 1.0 - delta) * Q
    z = Q.flatten(-2)  # ([layers,] batch * E)
    return (beta * z.var(-1) / (z.mean(-1) ** 2 + 1e-10)).sum()


def task_types(spec, examples) -> list[int] | None:
    """The 0/1 group of each example: metadata["task_type"] when given, else 1 for knowledge tasks;
    None when every example has the same type (no group to localize the balance by)."""
    default = 1 if spec.category == "knowledge" else 0
    types = [int(ex.metadata.get("task_type", default)) for ex in examples]
    return types if len(set(types)) > 1 else None


def batch_hook(model: MoEModel, ctx):
    """Sets `model.task_type` to the task types of each training batch (None for a one-type fit)."""
    types = task_types(ctx.spec, ctx.train)

    def set_task_type(idx: list[int]) -> None:
        model.task_type = None if types is None else \
            torch.tensor([types[i] for i in idx], dtype=torch.long, device=model.device)

    return set_task_type


def aux_loss(model: MoEModel, cfg: Config) -> torch.Tensor | None:
    """The sum of every routed layer's constraint, computed over the layers' gates stacked (one
    set of small operations per step instead of one per layer: on a GPU each costs a launch)."""
    if model.task_type is None and not cfg.balance_one_type:
        return None  # one task type: the reference adds no constraint
    gates = [model.gates_of(layer) for layer in model.layers().values() if layer.last_gates is not None]
    if not gates:
        return None
    return lbc_loss(torch.stack(gates), model.task_type, model.attention_mask, cfg.beta, cfg.delta)


@register_method("loramoe", Config, trains=True, aux_loss=aux_loss, batch_hook=batch_hook, train_cost=1.5,
                 compared_with=("rocket", "xlora"), cite="Dou et al., arXiv 2312.09979",
                 degenerates=("base", "expert"))
def build(base, experts, cfg: Config) -> MoEModel:
    """LoRAMoE: FFN-only experts, dense softmax router per Linear (float32 weight and softmax), LBC
    auxiliary loss (when the fit mixes task types; none on one type unless balance_one_type)."""
    targets = models.targets(base, "mlp")
    if experts:
        experts = [e.only(targets) for e in experts]
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        experts = [fresh_expert(base, f"expert{i}", targets, cfg.r, cfg.alpha, gen)
                   for i in range(cfg.n_experts)]
    freeze_base(base)
    n = len(experts)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        layers = inject(base, experts, targets, cfg.dropout,
                        router=lambda layer: SoftmaxRouter(layer.d_in, n).to(layer.lora_A.device))
    for layer in layers.values():
        layer.lora_A.requires_grad_(cfg.train_experts)
        layer.lora_B.requires_grad_(cfg.train_experts)
    return MoEModel(base, cfg, experts)
