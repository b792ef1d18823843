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

Export (`EXPORT`): PEFT's X-LoRA layout: `adapter_config.json` (XLoraConfig, adapters named "0",
"1", ... after their subfolders), `adapter_model.safetensors` (the classifier) and one PEFT LoRA
folder per expert; `PeftModel.from_pretrained` with that config loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from loraocean.errors import ConfigError
from loraocean.models import hub_id
from loraocean.moe.export import PEFT_WEIGHTS, layer_tensors, owner_of, write_lora
from loraocean.moe.layer import inject
from loraocean.models.calling import cache_name, forward_params, takes_logits_to_keep
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import Export, check_config, check_types, register_method


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
        """Each MoE layer's gates times `global_scaling_weight` (None: unset), and their per-column
        factors in `dtype` (the activations'), computed once per distinct (gates, layer signature):
        with shared gates (`_gates` repeats one tensor unless the scalings are layerwise) and
        experts of one rank and scaling that is once per token for the whole model. In batch-1
        decoding each tensor operation costs about as much as its arithmetic, so this removes two
        or three of them from every adapted Linear. `bypass`: the layers compute their frozen base
        Linear only. Plain Python over the layers (no tensor ids), so the captured decoding step
        (`generate(cache_implementation="static")`) traces it as one graph."""
        shared = not self.config_obj.layerwise
        w = self.config_obj.global_scaling_weight
        if gates is not None and w != 1.0:
            gates = [gates[0] * w] * len(gates) if shared else [g * w for g in gates]
        if gates is not None and self.column_groups is None:  # after any checkpoint was loaded
            numbers: dict[tuple, int] = {}
            self.column_groups = [numbers.setdefault(layer.signature(), len(numbers)) for layer in self.moe]
        made: dict[tuple, torch.Tensor] = {}
        for i, layer in enumerate(self.moe):
            columns = None
            if gates is not None:
                key = (0 if shared else i, self.column_groups[i])
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
        decoder, name = self._calls["decoder"]
        if decoder is not None:
            return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                           **({} if cache is None else {name: cache}), **kwargs).last_hidden_state
        name = self._calls["base"]
        return self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         output_hidden_states=True, **({} if cache is None else {name: cache}),
                         **kwargs).hidden_states[-1]

    @property
    def _calls(self) -> dict:
        """How the two passes call the model: the decoder (None when the model has none apart from
        itself) and the keyword each takes its cache under. Asked once, outside any traced step:
        `cache_name` inspects signatures, which a traced graph cannot."""
        if self.__dict__.get("_calls_known") is None:
            decoder = self.base.get_decoder() if hasattr(self.base, "get_decoder") else None
            decoder = None if decoder is self.base else decoder
            self.__dict__["_calls_known"] = {
                "decoder": (decoder, None if decoder is None else cache_name(decoder)),
                "base": cache_name(self.base), "logits_to_keep": takes_logits_to_keep(self.base),
                "cache_position": "cache_position" in forward_params(self.base)}
        return self.__dict__["_calls_known"]

    def _dual(self, input_ids, attention_mask, first, second, use_cache, labels=None, **kwargs):
        """Both passes; returns pass 2's output, its gates and the scalings."""
        n_batch, n_tok = input_ids.shape
        try:
            self._scaling_pass_gates(n_batch, n_tok, input_ids.device)
            with torch.no_grad():
                hidden = self._scaling_pass(input_ids, attention_mask, first, use_cache, kwargs)
            scalings = self.scalings(hidden)
            gates = self._gates(scalings)
            self._set_gates(gates, dtype=hidden.dtype)
            name = self._calls["base"]
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                            use_cache=use_cache, **({} if second is None else {name: second}), **kwargs)
        finally:
            # While training, pass 2's gates stay set until the next forward: activation
            # checkpointing recomputes its layers during backward, after this call has returned.
            if not (self.training and torch.is_grad_enabled()):
                self._set_gates(None)
        return out, gates, scalings

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None,
                use_cache=False, cache=None, **kwargs):
        from transformers import DynamicCache

        self.attention_mask = attention_mask
        past = cache if cache is not None else past_key_values
        first, second = (None, None) if past is None else (past.scaling, past.main)
        if use_cache and first is None:
            first, second = DynamicCache(config=self.base.config), DynamicCache(config=self.base.config)
        out, gates, scalings = self._dual(input_ids, attention_mask, first, second, use_cache, labels, **kwargs)
        for layer, g in zip(self.moe, gates):  # last_gates for routing statistics: what pass 2 used
            layer.last_gates = g.detach()
        self.last_scalings = scalings
        out.cache = DualCache(first, second) if use_cache else None
        return out

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, max_new_tokens: int = 32,
                 do_sample: bool = False, eos_token_id=None, pad_token_id=None, use_cache: bool = True,
                 stop_strings=None, tokenizer=None, cache_implementation: str = "dynamic",
                 compile: bool | dict | None = None, **unused):
        """Greedy decoding with one KV cache per pass (left padding supported). A row ends at
        an end-of-sequence token or, given `stop_strings` and `tokenizer` (as transformers'
        generate takes them), once its decoded continuation contains one of them; finished rows
        are filled with `pad_token_id`, and decoding stops when every row has finished.

        `cache_implementation="static"` (transformers' name for it) keeps both caches in
        fixed-size buffers, so every per-token step has the same shapes and can be captured
        once: with `compile` (default: on CUDA) the step (both passes, the classifier, the gates
        and the argmax) runs as one `torch.compile(mode="reduce-overhead")` graph, replayed as
        a CUDA graph, instead of several kernel launches from Python per adapted Linear. The
        tokens are those of the dynamic path."""
        if do_sample:
            raise ConfigError("X-LoRA generation is greedy only (do_sample=False)")
        if cache_implementation not in ("dynamic", "static"):
            raise ConfigError(f"X-LoRA generation: cache_implementation must be 'dynamic' or 'static', "
                              f"not {cache_implementation!r}")
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if stops and tokenizer is None:
            raise ConfigError("X-LoRA generation with stop_strings needs tokenizer=")
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int)
                                               else list(eos_token_id))
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if cache_implementation == "static" and use_cache:
            decode = self._static_decoder(input_ids, mask, max_new_tokens, compile)
        else:
            decode = self._dynamic_decoder(input_ids, mask, use_cache)
        ids = input_ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        eos_ids = torch.tensor(eos, dtype=torch.long, device=ids.device)
        nxt = None
        for _ in range(max_new_tokens):
            nxt = decode(nxt)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            if eos:
                done |= torch.isin(nxt, eos_ids)
            ids = torch.cat([ids, nxt[:, None]], 1)
            for row in (~done).nonzero().flatten().tolist() if stops else []:
                text = tokenizer.decode(ids[row, input_ids.shape[1]:], skip_special_tokens=True)
                done[row] = any(s in text for s in stops)
            if bool(done.all()):
                break
        if cache_implementation == "static":  # what the layers kept from a captured step is the
            for layer in self.moe:            # graph's memory, overwritten by its next replay
                layer.last_gates = None
        return ids

    def _dynamic_decoder(self, ids, mask, use_cache: bool):
        """decode(token) -> the next token of every row, given the previous one (None: the
        prompt), with the two dynamic caches (or, without `use_cache`, the whole prefix again)."""
        cache = None
        only_last = {"logits_to_keep": 1} if self._calls["logits_to_keep"] else {}

        def decode(token):
            nonlocal ids, mask, cache
            if token is not None:
                ids = torch.cat([ids, token[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(token[:, None])], 1)
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            if not use_cache:
                return self(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].argmax(-1)
            step = ids if token is None else token[:, None]
            out = self(input_ids=step, attention_mask=mask, cache=cache, use_cache=True,
                       position_ids=positions[:, -step.shape[1]:], **only_last)
            cache = out.cache
            return out.logits[:, -1].argmax(-1)
        return decode

    def _static_decoder(self, ids, mask, max_new_tokens: int, compile):
        """decode(token) as `_dynamic_decoder`, over fixed-size caches and a fixed-size mask; the
        prompt runs eagerly, each later token through `_token_step` (captured when `compile`)."""
        n_batch, n_prompt = ids.shape
        # Caches (and captured graphs) are kept for the next call that fits: lengths in steps of 256.
        length = -(-(n_prompt + max_new_tokens) // 256) * 256
        first, second = self._static_caches(n_batch, length, ids.device)
        full_mask = torch.zeros(n_batch, length, dtype=mask.dtype, device=ids.device)
        full_mask[:, :n_prompt] = mask
        step = self._captured_step(ids.device, compile)
        graphs = step is not self._token_step and ids.device.type == "cuda"
        position = mask.sum(-1, keepdim=True) - 1  # of each row's last token (rows are left-padded)
        t = n_prompt

        def decode(token):
            nonlocal position, t
            if token is None:
                positions = (mask.cumsum(-1) - 1).clamp_min(0)
                where = torch.arange(n_prompt, dtype=torch.long, device=ids.device)
                return self._token_step(ids, full_mask, positions, where, first, second)
            full_mask[:, t] = 1
            position = position + 1
            if graphs:  # a new iteration of the CUDA graphs: the previous step's outputs are not used again
                torch.compiler.cudagraph_mark_step_begin()
            where = torch.tensor([t], dtype=torch.long, device=ids.device)
            nxt = step(token[:, None], full_mask, position, where, first, second)
            t += 1
            return nxt.clone()  # a captured graph's output is overwritten by its next replay
        return decode

    def _token_step(self, ids, mask, positions, cache_position, first, second) -> torch.Tensor:
        """Both passes over static caches; the next token of every row (its greedy choice). The
        caches, positions and mask have fixed shapes, so one trace serves every decoding step."""
        kwargs = {"position_ids": positions}
        if self._calls["cache_position"]:  # transformers < 5 takes where to write explicitly
            kwargs["cache_position"] = cache_position
        if self._calls["logits_to_keep"]:
            kwargs["logits_to_keep"] = 1
        out, _, _ = self._dual(ids, mask, first, second, True, **kwargs)
        return out.logits[:, -1].argmax(-1)

    def _static_caches(self, n_batch: int, length: int, device):
        """The pair of StaticCaches for (batch, length), emptied; kept on the model because a
        captured step is bound to their buffers' addresses."""
        from transformers import StaticCache

        key = (n_batch, length, device, next(self.base.parameters()).dtype)
        kept = self.__dict__.get("_static_kept")
        if kept is not None and kept[0] == key:
            for cache in kept[1:]:
                cache.reset()
            return kept[1:]
        caches = (StaticCache(config=self.base.config, max_cache_len=length),
                  StaticCache(config=self.base.config, max_cache_len=length))
        self.__dict__["_static_kept"] = (key, *caches)
        return caches

    def _captured_step(self, device, compile: bool | dict | None):
        """`_token_step`, compiled as one graph (`fullgraph`) when `compile` is true (a dict: the
        options of `torch.compile`; default mode "reduce-overhead", a CUDA graph on CUDA) or None
        on CUDA, where kernel launches dominate batch-1 decoding. Compiled once per options."""
        if compile is None:
            compile = torch.device(device).type == "cuda"
        if not compile:
            return self._token_step
        options = {"mode": "reduce-overhead", "fullgraph": True}
        options.update(compile if isinstance(compile, dict) else {})
        if options.get("backend") is not None:
            options.pop("mode")  # torch.compile takes a mode with the default backend only
        kept = self.__dict__.setdefault("_compiled_steps", {})
        key = repr(sorted(options.items()))
        if key not in kept:
            kept[key] = torch.compile(self._token_step, **options)
        return kept[key]

def write_peft(config: dict, state: dict[str, torch.Tensor], out: Path) -> None:
    """The checkpoint's experts as PEFT LoRA folders "0", "1", ..., and its classifier under PEFT's
    X-LoRA names, with an XLoraConfig carrying our options."""
    from peft import XLoraConfig
    from safetensors.torch import save_file

    layers = layer_tensors(state)
    names = [str(i) for i in range(len(config["experts"]))]
    for i, name in enumerate(names):
        A, B, scale = {}, {}, {}
        for m, t in layers.items():
            cols = (owner_of(config, m) == i).nonzero().flatten()
            if len(cols):
                A[m], B[m] = t["lora_A"][cols], t["lora_B"][:, cols]
                scale[m] = float(t["scales"][i])
        (out / name).mkdir()
        write_lora(out / name, A, B, scale, config.get("base_model"))
    c = config["config"]
    hidden_size = next(v for k, v in state.items() if k.startswith("classifier.") and v.dim() == 2).shape[1]
    XLoraConfig(task_type="CAUSAL_LM", hidden_size=hidden_size, adapters={n: n for n in names},
                xlora_depth=c["depth"], xlora_size=c["hidden"], xlora_dropout_p=c["dropout"],
                layerwise_scalings=c["layerwise"], softmax_temperature=c["temperature"],
                enable_softmax=c["enable_softmax"], top_k_lora=c["top_k"],
                enable_softmax_topk=c["softmax_topk"], scaling_pass_value=c["scaling_pass_value"],
                global_scaling_weight=c["global_scaling_weight"],
                base_model_name_or_path=hub_id(config.get("base_model"))).save_pretrained(str(out))
    classifier = {f"base_model.internal_xlora_classifier.layers.{k[len('classifier.'):]}": v.contiguous()
                  for k, v in state.items() if k.startswith("classifier.")}
    save_file(classifier, str(out / PEFT_WEIGHTS), metadata={"format": "pt"})


def load_peft(base, folder: Path):
    """PEFT's XLoraModel from an exported folder (its adapters are the folder's subfolders)."""
    from peft import PeftModel, XLoraConfig

    base.config.use_cache = False  # PEFT's X-LoRA requires it
    config = XLoraConfig.from_pretrained(str(folder))
    config.adapters = {name: str(Path(folder) / name) for name in config.adapters}
    return PeftModel.from_pretrained(base, str(folder), config=config).eval()


EXPORT = Export("xlora", "PEFT X-LoRA folder", write_peft, load_peft)


@register_method("xlora", Config, trains=True, train_cost=2.0, eval_cost=2.0,  # two passes per forward
                 cite="Buehler & Buehler, arXiv 2402.07148; PEFT's XLoraModel (huggingface/peft)",
                 export=EXPORT, degenerates=("expert",))
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
