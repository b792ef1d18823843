"""The one multi-expert Linear every method uses, and how to put it into a model.

    y = W0 x + sum_e g_e(x) * s_e * B_e A_e dropout(x)

computed with two matrix products over the experts stacked side by side (no Python loop):
h = dropout(x) A_cat^T (tokens x R, R = sum of ranks), each column of h is multiplied by the gate
of the expert it belongs to times that expert's scaling, then y = W0 x + h B_cat^T. Ranks may
differ between experts (an expert that does not adapt this module has rank 0 here).

A method with another layout subclasses `MoELinear`: `project(x)` makes h (one shared A for every
expert, as HydraLoRA has it, is `F.linear(x, A)` repeated once per expert), and `inject(...,
layer=)` builds the subclass; checkpoints, routing statistics and the conformance kit take any
subclass as they take this layer.

The gate g comes from `self.router(x, h, layer)` (a module, trained or fixed) or, when a method
computes gates outside the layer (X-LoRA), from `layer.external_gates`; such a method may also give
the per-column factors g_owner(j) * s_owner(j) themselves (`layer.external_columns`, `columns()`),
computed once for all layers of one `signature()` instead of once per layer. The last gates are
kept in `layer.last_gates` for auxiliary losses and routing statistics. `layer.bypass = True` makes the
layer its frozen base Linear alone (exactly what all-zero gates give, without computing the experts).

Precision: the experts are stored in the base's dtype (float32 for a quantised base), and a method
that trains them keeps them in float32 (`MoEModel.upcast_trainables`); either way the products run
in the dtype of the activations (the base's), the float32 weights cast on the way in, as PEFT does
with `autocast_adapter_dtype`: AdamW updates float32 weights, the step costs what a bf16 one does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from loraocean.errors import ConfigError
from loraocean.models.architectures import linear_dims, matches
from loraocean.moe.experts import Expert


def top_k_renormalise(probs: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest gates per token and rescale them to sum to 1."""
    if k is None or k >= probs.shape[-1]:
        return probs
    values, idx = probs.topk(k, dim=-1)
    kept = torch.zeros_like(probs).scatter(-1, idx, values)
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-20)


class SoftmaxRouter(nn.Module):
    """Token router W_g (E x d_in, no bias, a float32 parameter), optional top-k renormalised
    (LoRAMoE: dense; Rocket: top-2). Initialised like nn.Linear (kaiming-uniform).

    The logits are computed as transformers' Mixtral router does: the product in the activations'
    dtype (W_g cast on the way in, like the experts' weights), the softmax in float32. Casting x up
    instead would cost a float32 copy of every routed layer's input in the forward and again for its
    gradient, on a bf16 model; on a float32 model both are the same."""

    def __init__(self, d_in: int, n_experts: int, top_k: int | None = None, temperature: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.top_k = top_k
        self.temperature = temperature

    def forward(self, x, h, layer):
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        logits = F.linear(x, weight).float() / self.temperature
        return top_k_renormalise(logits.softmax(-1), self.top_k)


class FixedGates(nn.Module):
    """The same gate vector for every token (uniform average, one expert, merged experts)."""

    def __init__(self, weights):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).clone())

    def forward(self, x, h, layer):
        return self.weights.expand(*x.shape[:-1], -1)


class MoELinear(nn.Module):
    """A frozen Linear (or GPT-2's Conv1D, the same map with its weight stored transposed) plus E
    stacked LoRA experts mixed by per-token gates."""

    def __init__(self, base: nn.Module, As: list[torch.Tensor], Bs: list[torch.Tensor],
                 scales: list[float], dropout: float = 0.0):
        super().__init__()
        d_in, d_out = linear_dims(base)
        A = torch.cat([a if a.numel() else torch.zeros(a.shape[0], d_in) for a in As], 0)
        B = torch.cat([b if b.numel() else torch.zeros(d_out, b.shape[1]) for b in Bs], 1)
        self.hold(base, A, B, [a.shape[0] for a in As], scales, dropout)

    def hold(self, base: nn.Module, A: torch.Tensor, B: torch.Tensor, ranks: list[int], scales: list[float],
             dropout: float) -> None:
        """Keep `base` (frozen), A (the rows `project` reads) and B (d_out x sum(ranks): expert e's
        `ranks[e]` columns side by side), in the base's dtype and on its device."""
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d_in, d_out = linear_dims(base)
        self.d_in, self.d_out = d_in, d_out
        dtype, device = base.weight.dtype, base.weight.device
        if not dtype.is_floating_point:  # a quantised base (bitsandbytes 4/8-bit) stores integers
            dtype = torch.float32
        self.lora_A = nn.Parameter(A.to(device=device, dtype=dtype))  # (R, d_in)
        self.lora_B = nn.Parameter(B.to(device=device, dtype=dtype))  # (d_out, R)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32, device=device))
        # owner[j] = the expert that column j of h belongs to
        owner = torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks, dtype=torch.long))
        self.register_buffer("owner", owner.to(device), persistent=False)
        self.ranks = ranks
        self.dropout = dropout
        self.router: nn.Module | None = None
        self.external_gates: torch.Tensor | None = None
        self.external_columns: torch.Tensor | None = None  # (tokens, R) from `columns()`, given with external_gates
        self.last_gates: torch.Tensor | None = None
        self.bypass = False
        self.index = 0  # position among the model's MoE layers (set by `inject`)
        # y += ... in place only behind torch's own products (see forward); any other base
        # (a bitsandbytes layer) gets the out-of-place sum
        self.in_place = type(base) is nn.Linear or type(base).__name__ == "Conv1D"

    @property
    def n_experts(self) -> int:
        return len(self.ranks)

    def signature(self) -> tuple:
        """Layers with equal signatures turn the same gates into the same per-column factors (reads
        the scalings back from their device: call it once, not per step)."""
        return tuple(self.ranks), tuple(self.scales.tolist())

    def columns(self, gates: torch.Tensor) -> torch.Tensor:
        """(..., R): each column's gate times its expert's scaling."""
        return (gates * self.scales).index_select(-1, self.owner)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """h (tokens, R): column j is what expert owner[j]'s B column j multiplies."""
        A = self.lora_A if self.lora_A.dtype == x.dtype else self.lora_A.to(x.dtype)
        return F.linear(x, A)

    def expert_slice(self, e: int) -> slice:
        start = sum(self.ranks[:e])
        return slice(start, start + self.ranks[e])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Kept to few tensor operations: in batch-1 decoding each one costs as much as the
        # experts' arithmetic, and a model holds hundreds of these layers.
        if self.bypass:
            return self.base(x)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])  # tokens x d_in: the in-place addmm_ below needs a 2-D non-view output
        y = self.base(x)
        x_in = F.dropout(x, self.dropout, self.training) if self.dropout else x
        h = self.project(x_in)  # (tokens, R)
        if self.external_gates is not None:
            gates = self.external_gates.reshape(-1, self.n_experts)
        elif self.router is not None:
            gates = self.router(x, h, self)
        else:
            raise RuntimeError("MoELinear has neither a router nor external gates")
        self.last_gates = gates.view(*lead, -1)
        if self.external_columns is not None:
            per_column = self.external_columns.reshape(-1, self.owner.numel())
        else:
            per_column = self.columns(gates)  # (tokens, R)
        mixed = h * per_column if per_column.dtype == h.dtype else h * per_column.to(h.dtype)
        if mixed.dtype != y.dtype:
            mixed = mixed.to(y.dtype)
        B = self.lora_B if self.lora_B.dtype == y.dtype else self.lora_B.to(y.dtype)
        if not self.in_place:
            return (y + mixed @ B.t()).view(*lead, -1)
        # y += mixed B^T in place as one fused multiply-add: no output-sized temporary, and no
        # output-sized copies in backward. Autograd allows it: the base product saves its input,
        # not its output.
        y.addmm_(mixed, B.t())
        return y.view(*lead, -1)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, leaf = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), leaf


def inject(model: nn.Module, experts: list[Expert], targets=None, dropout: float = 0.0,
           router=None, layer=None) -> dict[str, MoELinear]:
    """Replace every Linear that some expert adapts (and that matches `targets`, when given: leaf
    names or dotted suffixes, as PEFT matches them) by a MoELinear holding all experts.
    `router(layer)` makes each layer's router. `layer(name, base, As, Bs, scales, dropout)` makes
    each layer (default: `MoELinear(base, As, Bs, scales, dropout)`; a method's own subclass).
    Layers are numbered in `model.named_modules()` order (PEFT's order too). Returns them by name."""
    if not experts:
        return {}
    wanted = {m for e in experts for m in e.modules}
    if targets is not None:
        wanted = {m for m in wanted if matches(m, targets)}
    if not wanted:
        raise ConfigError(f"the experts adapt none of the target modules {sorted(set(targets or []))}; "
                          "choose experts trained on those modules")
    names = [n for n, mod in model.named_modules() if n in wanted and linear_dims(mod) is not None]
    missing = wanted - set(names)
    if missing:
        raise ConfigError(f"the model has no Linear layer named {sorted(missing)[0]!r} "
                          "(experts were trained on another architecture)")
    layers = {}
    for i, name in enumerate(names):
        base = model.get_submodule(name)
        d_in, d_out = linear_dims(base)
        As = [e.A.get(name, torch.zeros(0, d_in)) for e in experts]
        Bs = [e.B.get(name, torch.zeros(d_out, 0)) for e in experts]
        scales = [e.scale.get(name, 0.0) for e in experts]
        made = MoELinear(base, As, Bs, scales, dropout) if layer is None else layer(name, base, As, Bs, scales,
                                                                                    dropout)
        made.index = i
        if router is not None:
            made.router = router(made)
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, made)
        layers[name] = made
    return layers


def moe_layers(model: nn.Module) -> dict[str, MoELinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MoELinear)}


def remove(model: nn.Module) -> None:
    """Put the original Linear layers back (undo `inject`)."""
    for name in list(moe_layers(model)):
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, getattr(parent, leaf).base)
