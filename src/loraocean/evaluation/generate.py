"""Greedy generation for generate-mode tasks: batched with left padding and the KV cache
(transformers' `generate`), stop strings, then the task's answer extraction and metric."""

from __future__ import annotations

import torch

from loraocean.batching import clip
from loraocean.evaluation.choice import model_device, model_max_length, pad_id_of


def cut_at_stop(text: str, stop) -> str:
    """`text` up to the first occurrence of any stop string."""
    end = len(text)
    for s in stop or ():
        pos = text.find(s)
        if s and pos != -1:
            end = min(end, pos)
    return text[:end]


def _is_hf(model) -> bool:
    from transformers import GenerationMixin

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, GenerationMixin)


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int, stop=(),
                   batch_size: int = 8, progress=None) -> list[str]:
    """Greedy continuations of `prompts` (decoded, cut at the first stop string).

    Prompts are sorted by length and run `batch_size` at a time, left-padded. Generation stops at
    the tokenizer's end-of-sequence token, at `max_new_tokens`, and, for transformers models, as
    soon as every row has produced a stop string.
    """
    device = model_device(model)
    pad_id = pad_id_of(tokenizer)
    longest = model_max_length(model)  # a huge prompt is clipped before the tokenizer sees it
    encoded = [tokenizer(clip(p, longest), add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        extra = {}
        if stop and _is_hf(model):
            extra = {"stop_strings": list(stop), "tokenizer": tokenizer}
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id, **extra)
        for row, i in enumerate(chunk):
            new = gen[row, width:].tolist()
            if tokenizer.eos_token_id in new:
                new = new[:new.index(tokenizer.eos_token_id)]
            out[i] = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), stop)
        if progress is not None:
            progress(len(chunk))
    return out
