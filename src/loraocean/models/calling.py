"""What a model's forward accepts, asked in one place.

Models reach our code plain (transformers), wrapped by PEFT, or wrapped by an MoE method; the
keywords worth passing differ: transformers 5 renamed `past_key_values` to `cache`, and only
some forwards take `logits_to_keep` (logits at chosen positions only, which spares the output
head, the largest matrix of a small model). A wrapper that exposes `get_base_model()` (PEFT's
models, `MoEModel`) passes keywords on to that model, so its names count too.
"""

from __future__ import annotations

import functools
import inspect


def forward_params(model) -> set[str]:
    """Keyword names the model's forward accepts, its base model's included."""
    names: set[str] = set()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else None
    for m in (model, inner):
        if m is not None:
            names |= _param_names(getattr(m.forward, "__func__", m.forward))
    return names


@functools.lru_cache(maxsize=256)
def _param_names(function) -> frozenset[str]:
    """Parameter names of a forward function, read once per function: callers ask on every
    forward pass (decoding asks per token), and `inspect.signature` is not free."""
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a forward with no introspectable signature
        return frozenset()


def takes_logits_to_keep(model) -> bool:
    return "logits_to_keep" in forward_params(model)


def takes_logits_mask(model) -> bool:
    """Whether `logits_to_keep` may be a boolean (batch, length) mask (logits at the True
    positions only, flattened). transformers models slice with `slice_logits_to_keep`, which
    takes masks, in releases that have it; older ones (5.17 among them) index with an int or
    1-D positions only, and a mask raises IndexError there."""
    return takes_logits_to_keep(model) and _transformers_slices_masks()


@functools.cache
def _transformers_slices_masks() -> bool:
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


def cache_kwargs(model, cache) -> dict:
    """{name: cache} under the name the model's forward takes (`cache` since transformers 5);
    empty when there is no cache."""
    if cache is None:
        return {}
    return {cache_name(model): cache}


def cache_name(model) -> str:
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def output_cache(out):
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)
