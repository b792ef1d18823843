"""Answer-only negative log-likelihood of a model on examples, batched for repeated use.

For each example: the sum of -log p(answer token | prompt, earlier answer tokens) over the answer
tokens, and their number; the prompt is masked and no end-of-answer token is added. Answer-only
perplexity = exp(total / tokens) (`perplexity`). Used by `target_logprobs` (evaluation) and by the
`ppl` selection strategy, which scores one set of examples under many LoRAs: `prepare` encodes and
batches the examples once (left-padded, length-sorted), `score` runs them on a model.

Speed: the token prefix all examples share (system prompt, task instruction) runs once per `score`
call and its key/value cache is reused by every batch; only the logits of answer positions are
computed (`logits_to_keep`), so the output head (the largest matrix of a small model) is not applied
to prompt tokens. Written here rather than taken from lm-eval/OpenCompass: their scorers rebuild the
batches and recompute the prefix on every call, which the selection-speed target cannot afford.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from loraocean.batching import IGNORE, Encoded, encode, pad_batch
from loraocean.evaluation.choice import pad_id_of
from loraocean.models.calling import cache_name, output_cache, takes_logits_to_keep


@dataclass
class Batch:
    indices: list[int]           # which examples, in row order
    input_ids: torch.Tensor      # the examples after the shared prefix, left-padded
    attention_mask: torch.Tensor  # over shared prefix + row
    position_ids: torch.Tensor
    labels: torch.Tensor         # the last `keep` labels of each row (IGNORE outside answers)
    keep: int                    # answer positions to score at the end of every row


@dataclass
class Prepared:
    """K examples encoded and batched once, scored for every candidate."""
    prefix: list[int]   # token ids every example starts with (run once per candidate, then cached)
    batches: list[Batch]
    n: int


def shared_prefix(encoded: list[Encoded]) -> int:
    """Number of leading tokens all examples share (system prompt, task instruction), leaving each
    example at least one prompt token so every answer token is predicted inside its own row."""
    limit = min(sum(1 for x in e.labels if x == IGNORE) for e in encoded) - 1
    first = encoded[0].input_ids
    p = 0
    while p < limit and all(e.input_ids[p] == first[p] for e in encoded):
        p += 1
    return p


def prepare(encoded: list[Encoded], pad_id: int, batch_size: int = 8, share_prefix: bool = True) -> Prepared:
    """Examples sorted by length and cut into batches after their shared prefix; rows are left-padded
    so every answer ends at the last position; positions count real tokens only."""
    p = shared_prefix(encoded) if share_prefix and len(encoded) > 1 else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = [Encoded(encoded[i].input_ids[p:], encoded[i].labels[p:]) for i in idx]
        b = pad_batch(rows, pad_id, side="left")
        mask = torch.cat([torch.ones(len(idx), p, dtype=torch.long), b["attention_mask"]], 1)
        answer = [sum(1 for x in r.labels if x != IGNORE) for r in rows]
        keep = min(max(answer), b["input_ids"].shape[1] - 1)  # a row's first token has no logit
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
        batches.append(Batch(idx, b["input_ids"], mask, position_ids, b["labels"][:, -keep:], keep))
    return Prepared(encoded[0].input_ids[:p], batches, len(encoded))


@torch.no_grad()
def score(model, prepared: Prepared) -> list[tuple[float, int]]:
    """Per example (sum of answer-token negative log-likelihoods, number of answer tokens)."""
    device = next(model.parameters()).device
    trim = takes_logits_to_keep(model)
    cache_kw = cache_name(model)
    prefix_cache = None
    if prepared.prefix:
        ids = torch.tensor([prepared.prefix], device=device)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        prefix_cache = output_cache(out)
    result: list[tuple[float, int]] = [(0.0, 0)] * prepared.n
    for b in prepared.batches:
        kwargs = dict(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                      position_ids=b.position_ids.to(device), use_cache=prefix_cache is not None)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)  # the forward appends to it
            cache.reorder_cache(torch.zeros(len(b.indices), dtype=torch.long, device=device))
            kwargs[cache_kw] = cache
        if trim:
            kwargs["logits_to_keep"] = b.keep + 1
        logits = model(**kwargs).logits[:, -(b.keep + 1):-1].float()
        labels = b.labels.to(device)
        # over (tokens, vocab) rows: cross_entropy on the (batch, vocab, time) layout is measurably
        # less accurate on CPU (errors ~1e-4 against float64 on SmolLM2 logits)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                labels.clamp(min=0).reshape(-1),
                                                reduction="none").view(labels.shape)
        mask = labels != IGNORE
        sums = (nll * mask).sum(-1)
        counts = mask.sum(-1)
        for row, i in enumerate(b.indices):
            result[i] = (float(sums[row]), int(counts[row]))
    return result


def answer_nll(model, tokenizer, examples, batch_size: int = 8, template: str = "auto",
               max_length: int | None = None, share_prefix: bool = True) -> list[tuple[float, int]]:
    """Per example (answer-token NLL sum, answer tokens) of `model` on `examples`; prompts longer
    than `max_length` tokens (None: no limit) are cut from the left."""
    encoded = [encode(ex, tokenizer, template, max_length=max_length, add_eos=False)
               for ex in examples]
    return score(model, prepare(encoded, pad_id_of(tokenizer), batch_size, share_prefix))


def perplexity(scores: list[tuple[float, int]]) -> float:
    total = sum(s for s, _ in scores)
    tokens = sum(n for _, n in scores)
    return math.exp(total / tokens) if tokens else float("nan")
