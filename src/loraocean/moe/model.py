"""`MoEModel`: a base causal LM with MoE layers inside, used like an HF causal LM.

    out = model(input_ids=..., attention_mask=..., labels=...)   # .loss, .logits, .past_key_values
    ids = model.generate(input_ids=..., attention_mask=..., max_new_tokens=32)

Methods whose gates are computed inside each layer (LoRAMoE, Rocket, MoLE, Arrow, the fixed-gate
baselines) need nothing more: the injected layers work under HF's own forward and generate.
X-LoRA subclasses it (two passes per forward).
"""

from __future__ import annotations

import torch
from torch import nn

from loraocean.models.calling import cache_kwargs
from loraocean.moe.experts import Expert
from loraocean.moe.layer import MoELinear, moe_layers


class MoEModel(nn.Module):
    def __init__(self, base: nn.Module, config, experts: list[Expert]):
        super().__init__()
        self.base = base
        self.method = ""  # the registered method's name, set by its `build` (moe.registry)
        self.config_obj = config
        self.expert_info = [e.describe() for e in experts]
        self.attention_mask: torch.Tensor | None = None  # of the current forward (aux losses)
        self.batch_shape: torch.Size | None = None        # (batch, tokens) of the current forward
        self.task_type: torch.Tensor | None = None        # per-example labels a method's batch_hook sets
        self.train(base.training)  # new layers (dropout) follow the base model's mode

    # HF-like surface ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.base.config

    @property
    def device(self):
        return next(self.base.parameters()).device

    def get_base_model(self) -> nn.Module:
        """The transformers model inside (as PEFT's wrappers name it): keywords its forward takes,
        such as `logits_to_keep`, pass through ours."""
        return self.base

    def layers(self) -> dict[str, MoELinear]:
        return moe_layers(self.base)

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None,
                use_cache=False, cache=None, **kwargs):
        """The base model's forward; the KV cache may be given as `past_key_values` or `cache`
        (transformers 5's name)."""
        self.attention_mask = attention_mask
        self.batch_shape = None if input_ids is None else input_ids.shape
        return self.base(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                         use_cache=use_cache, **cache_kwargs(self.base, cache if cache is not None else past_key_values), **kwargs)

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        self.attention_mask = self.batch_shape = None
        return self.base.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def gates_of(self, layer: MoELinear) -> torch.Tensor | None:
        """The layer's gates of the current forward as (batch, tokens, E): some families (OPT)
        flatten batch and tokens before their MLP Linears, so a layer sees (batch x tokens, d)."""
        gates = layer.last_gates
        if gates is None or self.batch_shape is None or gates.shape[:-1] == self.batch_shape:
            return gates
        return gates.reshape(*self.batch_shape, gates.shape[-1])

    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    # what a checkpoint stores ------------------------------------------------------------------
    def moe_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor the method added (experts, routers, classifiers), none of the base model's:
        the tensors of every MoE layer but its frozen `base`, and those of every module attached
        to this model beside `base`."""
        state = {}
        for name, layer in self.layers().items():
            for key, value in layer.state_dict().items():
                if not key.startswith("base."):
                    state[f"layers.{name}.{key}"] = value
        for child_name, child in self.named_children():
            if child_name != "base":
                for key, value in child.state_dict().items():
                    state[f"{child_name}.{key}"] = value
        return {k: v.detach().contiguous() for k, v in state.items()}

    def load_moe_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `moe_state_dict` saved. A subclass that saves more (its own state) overrides
        both: it adds its tensors in `moe_state_dict`, and here takes them out of `state` before
        calling this, which checks and loads the layers' and attached modules' tensors."""
        own = MoEModel.moe_state_dict(self)
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise KeyError(f"checkpoint tensors do not match the method's layout: missing "
                           f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        layers = self.layers()
        with torch.no_grad():
            for key, value in state.items():
                if key.startswith("layers."):
                    tensor = _lookup(layers, key[len("layers."):])
                else:
                    tensor = _lookup(dict(self.named_children()), key)
                if tensor.shape != value.shape:
                    raise KeyError(f"{key}: checkpoint shape {tuple(value.shape)} != {tuple(tensor.shape)}")
                tensor.copy_(value.to(dtype=tensor.dtype, device=tensor.device))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def upcast_trainables(self) -> None:
        """Every trainable bf16/fp16 parameter to float32 (PEFT's `autocast_adapter_dtype`): the
        optimizer then updates float32 weights; the forward casts them to the activations' dtype."""
        for p in self.trainable_parameters():
            if p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()


def _lookup(roots: dict[str, nn.Module], dotted: str) -> torch.Tensor:
    """The tensor at `dotted` where the first part(s) name one of `roots` (names may hold dots)."""
    for root_name in sorted(roots, key=len, reverse=True):
        if dotted.startswith(root_name + "."):
            module, rest = roots[root_name], dotted[len(root_name) + 1:]
            *mods, attr = rest.split(".")
            for m in mods:
                module = getattr(module, m)
            return getattr(module, attr)
    raise KeyError(dotted)


def freeze_base(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
