"""X-LoRA (Buehler & Buehler, arXiv 2402.07148), compatible with PEFT's XLoraModel.

Base model and adapters frozen; only the scaling classifier trains; no auxiliary loss.
Each forward is two passes:
1. no grad: every expert scaled by `scaling_pass_value` (default 0, i.e. the base model), taking
   the last hidden states h (batch x tokens x d);
2. classifier(h) -> logits (batch, tokens, L, E) (one set shared by all L adapted Linears unless
   `layerwise`), softmax(/temperature) over experts, optional top-k (and softmax over the kept
   ones, as PEFT does); adapted Linear l uses gates[:, :, l, :] * global_scaling_weight.
Because both passes are causal, generation can keep one KV cache per pass and feed only the new
token; PEFT's generate disables the cache and recomputes both passes over the whole prefix for
every token. `XLoRAModel.generate` is our greedy loop with the two caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loraocean.errors import ConfigError
from loraocean.moe.layer import inject
from loraocean.models.calling import cache_kwargs, takes_logits_to_keep
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import check_config, check_types, register_method


@dataclass
class Config:
    depth: int = 1                  # classifier layers
    hidden: int = 2048              # classifier hidden size (depth > 1)
    dropout: float = 0.2            # classifier dropout (depth > 1)
    layerwise: bool = False         # one set of scalings per adapted Linear
    temperature: float = 1.0
    enable_softmax: bool = True
    top_k: int | None = None
    softmax_topk: bool = False      # softmax over the kept top-k scalings
    scaling_pass_value: float = 0.0
    global_scaling_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_config(self, "depth", self.depth >= 1, "must be at least 1")
        check_config(self, "hidden", self.hidden >= 1, "must be at least 1")
        check_config(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_config(self, "temperature", self.temperature > 0, "must be positive")
        check_config(self, "top_k", self.top_k is None or self.top_k >= 1, "must be at least 1 or null")


def classifier(d_model: int, n_experts: int, n_layers: int, cfg: Config) -> nn.Sequential:
    """Same layout as PEFT's XLoraClassifier.layers, so weights can be exchanged."""
    out = n_experts * n_layers if cfg.layerwise else n_experts
    if cfg.depth == 1:
        return nn.Sequential(nn.Linear(d_model, out))
    parts: list[nn.Module] = [nn.Linear(d_model, cfg.hidden), nn.ReLU()]
    if cfg.dropout > 0:
        parts.append(nn.Dropout(cfg.dropout))
    for _ in range(cfg.depth - 2):
        parts += [nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU()]
        if cfg.dropout > 0:
            parts.append(nn.Dropout(cfg.dropout))
    parts.append(nn.Linear(cfg.hidden, out))
    return nn.Sequential(*parts)


@dataclass
class DualCache:
    """The KV caches of the scaling pass and of the main pass."""
    scaling: object
    main: object

    def reorder_cache(self, index: torch.Tensor) -> None:
        """Row r becomes old row index[r] in both caches (used by choice scoring)."""
        for cache in (self.scaling, self.main):
            for layer in cache.layers:
                layer.reorder_cache(index)


class XLoRAModel(MoEModel):
    def __init__(self, base, cfg: Config, experts):
        super().__init__(base, cfg, experts)
        self.moe = list(self.layers().values())
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.classifier = classifier(base.config.hidden_size, len(experts), len(self.moe), cfg)
        self.classifier.to(device=self.device, dtype=next(base.parameters()).dtype)
        self.last_scalings: torch.Tensor | None = None
        self.column_groups: list[int] | None = None  # layer -> its signature's number (first use)
        self.train(base.training)

    def _top_k(self, s: torch.Tensor) -> torch.Tensor:
        cfg = self.config_obj
        if cfg.top_k is not None:
            idx = s.topk(cfg.top_k, dim=-1).indices
            s = s * torch.zeros_like(s, dtype=torch.bool).scatter(-1, idx, True).to(s.dtype)
        if cfg.softmax_topk:
            keep = s != 0
            s = s.masked_fill(~keep, float("-inf")).softmax(-1).masked_fill(~keep, 0.0)
        return s

    def _gates(self, scalings: torch.Tensor) -> list[torch.Tensor]:
        """Each MoE layer's top-k'd gates (batch, tokens, E) from scalings (batch, tokens, L, E);
        computed once and shared by every layer unless the scalings are layerwise."""
        if not self.config_obj.layerwise:
            return [self._top_k(scalings[:, :, 0])] * len(self.moe)
        return [self._top_k(scalings[:, :, layer.index]) for layer in self.moe]

    def _set_gates(self, gates: list[torch.Tensor] | None, bypass: bool = False, dtype=None) -> None:
        """Each MoE layer's gates times `global_scaling_weight` (None: unset; a tensor shared by
        all layers is scaled once), and their per-column factors in `dtype` (the activations'),
        computed once per distinct (gates, layer signature): with shared gates and experts of one
        rank and scaling that is once per token for the whole model. In batch-1 decoding each
        tensor operation costs about as much as its arithmetic, so this removes two or three of
        them from every adapted Linear. `bypass`: the layers compute their frozen base Linear only."""
        w = self.config_obj.global_scaling_weight
        if gates is not None:
            shared = all(g is gates[0] for g in gates)
            if w != 1.0:
                gates = [gates[0] * w] * len(gates) if shared else [g * w for g in gates]
        if gates is not None and self.column_groups is None:  # after any checkpoint was loaded
            numbers: dict[tuple, int] = {}
            self.column_groups = [numbers.setdefault(layer.signature(), len(numbers)) for layer in self.moe]
        made: dict[tuple, torch.Tensor] = {}
        for i, layer in enumerate(self.moe):
            columns = None
            if gates is not None:
                key = (id(gates[i]), self.column_groups[i])  # the gate tensors stay alive during this loop
                if key not in made:
                    made[key] = layer.columns(gates[i]).to(dtype or gates[i].dtype)
                columns = made[key]
            layer.external_gates = None if gates is None else gates[i]
            layer.external_columns = columns
            layer.bypass = bypass

    def _scaling_pass_gates(self, n_batch: int, n_tok: int, device) -> None:
        """Every expert scaled by `scaling_pass_value` for pass 1; at the default 0 that is the
        base model exactly, so the layers skip their experts (`bypass`) instead of multiplying by 0."""
        value = self.config_obj.scaling_pass_value
        if value == 0:
            self._set_gates(None, bypass=True)
            return
        dummy = torch.full((n_batch, n_tok, len(self.expert_info)), value, device=device,
                           dtype=self.classifier[0].weight.dtype)
        self._set_gates([self._top_k(dummy)] * len(self.moe))

    def scalings(self, hidden: torch.Tensor) -> torch.Tensor:
        cfg = self.config_obj
        logits = self.classifier(hidden.to(self.classifier[0].weight.dtype))  # float32 when trained
        n_batch, n_tok = hidden.shape[:2]
        n_layers, n_experts = len(self.moe), len(self.expert_info)
        if not cfg.layerwise:
            logits = logits.unsqueeze(2).expand(-1, -1, n_layers, -1)
        logits = logits.reshape(n_batch, n_tok, n_layers, n_experts)
        return (logits / cfg.temperature).softmax(-1) if cfg.enable_softmax else logits

    def _scaling_pass(self, input_ids, attention_mask, cache, use_cache, kwargs) -> torch.Tensor:
        """Last hidden states (after the final norm, as HF's hidden_states[-1]); through the
        decoder alone when the model has one, so the output head is not computed for nothing."""
        kwargs = {k: v for k, v in kwargs.items() if k != "logits_to_keep"}
        decoder = self.base.get_decoder() if hasattr(self.base, "get_decoder") else None
        if decoder is not None and decoder is not self.base:
            return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                           **cache_kwargs(decoder, cache), **kwargs).last_hidden_state
        return self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         output_hidden_states=True, **cache_kwargs(self.base, cache), **kwargs).hidden_states[-1]

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None,
                use_cache=False, cache=None, **kwargs):
        from transformers import DynamicCache

        self.attention_mask = attention_mask
        n_batch, n_tok = input_ids.shape
        past = cache if cache is not None else past_key_values
        first, second = (None, None) if past is None else (past.scaling, past.main)
        if use_cache and first is None:
            first, second = DynamicCache(config=self.base.config), DynamicCache(config=self.base.config)
        try:
            self._scaling_pass_gates(n_batch, n_tok, input_ids.device)
            with torch.no_grad():
                hidden = self._scaling_pass(input_ids, attention_mask, first, use_cache, kwargs)
            scalings = self.scalings(hidden)
            gates = self._gates(scalings)
            self._set_gates(gates, dtype=hidden.dtype)
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                            use_cache=use_cache, **cache_kwargs(self.base, second), **kwargs)
        finally:
            # While training, pass 2's gates stay set until the next forward: activation
            # checkpointing recomputes its layers during backward, after this call has returned.
            if not (self.training and torch.is_grad_enabled()):
                self._set_gates(None)
        for layer, g in zip(self.moe, gates):  # last_gates for routing statistics: what pass 2 used
            layer.last_gates = g.detach()
        self.last_scalings = scalings
        out.cache = DualCache(first, second) if use_cache else None
        return out

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, max_new_tokens: int = 32,
                 do_sample: bool = False, eos_token_id=None, pad_token_id=None, use_cache: bool = True,
                 stop_strings=None, tokenizer=None, **unused):
        """Greedy decoding with one KV cache per pass (left padding supported). A row ends at
        an end-of-sequence token or, given `stop_strings` and `tokenizer` (as transformers'
        generate takes them), once its decoded continuation contains one of them; finished rows
        are filled with `pad_token_id`, and decoding stops when every row has finished."""
        if do_sample:
            raise ConfigError("X-LoRA generation is greedy only (do_sample=False)")
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if stops and tokenizer is None:
            raise ConfigError("X-LoRA generation with stop_strings needs tokenizer=")
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int)
                                               else list(eos_token_id))
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        ids = input_ids
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        cache, step = None, ids
        only_last = {"logits_to_keep": 1} if takes_logits_to_keep(self.base) else {}
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            if use_cache:
                out = self(input_ids=step, attention_mask=mask, cache=cache, use_cache=True,
                           position_ids=positions[:, -step.shape[1]:], **only_last)
                cache = out.cache
            else:
                out = self(input_ids=ids, attention_mask=mask, position_ids=positions)
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            if eos:
                done |= torch.isin(nxt, torch.tensor(eos, device=nxt.device))
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(nxt[:, None])], 1)
            step = nxt[:, None]
            for row in (~done).nonzero().flatten().tolist() if stops else []:
                text = tokenizer.decode(ids[row, input_ids.shape[1]:], skip_special_tokens=True)
                done[row] = any(s in text for s in stops)
            if bool(done.all()):
                break
        return ids


@register_method("xlora", Config, trains=True, train_cost=2.0, eval_cost=2.0)  # two passes per forward
def build(base, experts, cfg: Config) -> XLoRAModel:
    """X-LoRA: frozen experts, scaling classifier on the base's hidden states (dual pass)."""
    if not experts:
        raise ConfigError("xlora needs library LoRAs as experts (give --experts)")
    freeze_base(base)
    inject(base, experts)
    model = XLoRAModel(base, cfg, experts)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    return model
