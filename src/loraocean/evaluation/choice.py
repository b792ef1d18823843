"""Likelihood scoring of choices: one forward pass gives both conventions.

For each question the context is run once (contexts left-padded, batches length-sorted); its keys
and values are then copied once per choice and every choice continues from that cache. From that
single pass we keep, per choice, the summed log-probability of its tokens (lm-eval's number) and,
per question, the summed negative log-likelihood of the context tokens themselves, which is what
OpenCompass's whole-sequence perplexity adds on top. Nothing is recomputed across conventions.

Why by hand: lm-eval's HFLM runs every (context, choice) pair as its own sequence, and neither
transformers nor PEFT offers shared-prefix scoring of several continuations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from loraocean.batching import split_encode
from loraocean.models.calling import cache_name, output_cache, takes_logits_to_keep
from loraocean.tasks.example import Example
from loraocean.tasks.prompts import render


@dataclass
class ChoiceScores:
    """Raw scores of one question."""

    logprobs: list[float]    # per choice: sum log p(choice tokens | context)
    n_tokens: list[int]      # per choice: number of choice tokens
    greedy: list[bool]       # per choice: every choice token is the argmax (lm-eval's is_greedy)
    context_nll: float       # sum of -log p of context tokens 2..n given their prefix
    n_context: int           # context tokens

    def whole_ce(self, i: int) -> float:
        """OpenCompass PPL: cross-entropy of the whole filled prompt (context + choice i) divided
        by its number of tokens. As OpenCompass's HuggingFace models do, the divisor counts every
        token of the sequence, although the first one has no prediction."""
        return (self.context_nll - self.logprobs[i]) / (self.n_context + self.n_tokens[i])

    def choice_ce(self, i: int) -> float:
        """OpenCompass PPL with the context masked: mean cross-entropy of the choice tokens only."""
        return -self.logprobs[i] / max(1, self.n_tokens[i])


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_max_length(model, default: int = 2048) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or default)


def _forward(model, ids, mask, positions, past=None, last_only=False):
    """Log-probabilities (fp32) and the KV cache. `last_only` asks for the last position's
    logits only (`logits_to_keep`) where the model takes it."""
    kwargs = {cache_name(model): past}
    if last_only and takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
    return out.logits.float().log_softmax(-1), output_cache(out)


def _repeat_cache(cache, index: torch.Tensor) -> None:
    """Row `r` of the cache becomes the old row `index[r]` (a question's context, once per choice)."""
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            layer.reorder_cache(index)
    else:  # caches without layers (older/foreign implementations)
        cache.reorder_cache(index)


@torch.no_grad()
def _score_group(model, group: list[tuple[list[int], list[list[int]]]], pad_id: int,
                 context_nll: bool) -> list[ChoiceScores]:
    device = model_device(model)
    width = max(len(ctx) for ctx, _ in group)
    ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for i, (ctx, _) in enumerate(group):
        ids[i, width - len(ctx):] = torch.tensor(ctx)
        mask[i, width - len(ctx):] = 1
    ids, mask = ids.to(device), mask.to(device)
    ctx_len = mask.sum(1)
    logp, cache = _forward(model, ids, mask, (mask.cumsum(1) - 1).clamp(min=0), last_only=not context_nll)
    if context_nll:  # only OpenCompass's whole-sequence convention needs the context's own NLL
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        both = (mask[:, 1:] * mask[:, :-1]).bool()
        ctx_nll = -(tok_lp * both).sum(1)
    else:
        ctx_nll = torch.full((len(group),), float("nan"))

    rows = [(q, cont) for q, (_, conts) in enumerate(group) for cont in conts]
    index = torch.tensor([q for q, _ in rows], device=device)
    last = logp[:, -1][index]                                   # predicts each choice's 1st token
    first = torch.tensor([cont[0] for _, cont in rows], device=device)
    lp = last.gather(-1, first[:, None])[:, 0]
    greedy = last.argmax(-1) == first
    rest = max(len(cont) for _, cont in rows) - 1
    if rest > 0:
        _repeat_cache(cache, index)
        c_ids = torch.full((len(rows), rest), pad_id, dtype=torch.long)
        c_tgt = torch.zeros((len(rows), rest), dtype=torch.long)
        c_mask = torch.zeros((len(rows), rest), dtype=torch.long)
        for r, (_, cont) in enumerate(rows):
            n = len(cont) - 1
            if n:
                c_ids[r, :n] = torch.tensor(cont[:-1])
                c_tgt[r, :n] = torch.tensor(cont[1:])
                c_mask[r, :n] = 1
        c_ids, c_tgt, c_mask = c_ids.to(device), c_tgt.to(device), c_mask.to(device)
        positions = ctx_len[index, None] + torch.arange(rest, device=device)
        c_logp, _ = _forward(model, c_ids, torch.cat([mask[index], c_mask], 1), positions, cache)
        c_lp = c_logp.gather(-1, c_tgt[..., None])[..., 0]
        lp = lp + (c_lp * c_mask).sum(1)
        greedy = greedy & ((c_logp.argmax(-1) == c_tgt) | (c_mask == 0)).all(1)

    out, r = [], 0
    for q, (ctx, conts) in enumerate(group):
        k = len(conts)
        out.append(ChoiceScores(logprobs=lp[r:r + k].tolist(), n_tokens=[len(c) for c in conts],
                                greedy=greedy[r:r + k].tolist(), context_nll=float(ctx_nll[q]),
                                n_context=len(ctx)))
        r += k
    return out


def score_tokens(model, requests: list[tuple[list[int], list[list[int]]]], pad_id: int,
                 batch_size: int = 16, progress=None, context_nll: bool = True) -> list[ChoiceScores]:
    """Scores of (context ids, [choice ids, ...]) requests, in the order given.

    Questions are sorted by context length (longest first) and run `batch_size` questions at a
    time; every context must be non-empty and every choice at least one token. Without
    `context_nll` (not needed by the lm-eval convention) only the context's last position is
    projected to the vocabulary, and `ChoiceScores.context_nll` is NaN.
    """
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    results: list[ChoiceScores | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, scores in zip(chunk, _score_group(model, [requests[i] for i in chunk], pad_id, context_nll)):
            results[i] = scores
        if progress is not None:
            progress(len(chunk))
    return results


def encode_choices(example: Example, tokenizer, template: str = "auto",
                   max_length: int = 2048) -> tuple[list[int], list[list[int]]]:
    """(context ids, [choice ids]) of a choice example, split as lm-eval does (batching.split_encode).
    Over-long contexts are cut from the left so every choice fits (as lm-eval does)."""
    r = render(example, tokenizer, template)
    pairs = [split_encode(tokenizer, r.prompt, c, max_length) for c in r.choices]
    ctx = pairs[0][0]
    conts = [cont for _, cont in pairs]
    keep = max(1, max_length - max(len(c) for c in conts))
    return ctx[-keep:], conts


def pad_id_of(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    return pid if pid is not None else (tokenizer.eos_token_id or 0)


def score_choices(model, tokenizer, examples: list[Example], batch_size: int = 16,
                  template: str = "auto", progress=None, context_nll: bool = True) -> list[ChoiceScores]:
    """Raw choice scores of choice examples (see `ChoiceScores`)."""
    max_length = model_max_length(model)
    requests = [encode_choices(ex, tokenizer, template, max_length) for ex in examples]
    return score_tokens(model, requests, pad_id_of(tokenizer), batch_size, progress, context_nll)


# Per-question decisions of each convention ------------------------------------------------------
def argmax(values) -> int:
    """Index of the largest value; ties go to the first (as numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def predict(scores: ChoiceScores, choices: list[str]) -> dict[str, int]:
    """The choice each rule picks.

    - `lm-eval acc`: highest summed log-probability of the choice.
    - `lm-eval acc_norm`: highest summed log-probability divided by the choice's length in
      characters (the choice text as the task lists it, without the separator), as lm-eval does.
    - `opencompass ppl`: lowest cross-entropy per token of the whole filled prompt (`whole_ce`).
    - `opencompass ppl_masked`: lowest mean cross-entropy of the choice tokens (context masked).
    """
    k = len(choices)
    picks = {
        "lm-eval acc": argmax(scores.logprobs),
        "lm-eval acc_norm": argmax([scores.logprobs[i] / (len(choices[i]) or 1) for i in range(k)]),
        "opencompass ppl_masked": argmax([-scores.choice_ce(i) for i in range(k)]),
    }
    if not math.isnan(scores.context_nll):  # scored without the context's own NLL: no whole-CE rule
        picks["opencompass ppl"] = argmax([-scores.whole_ce(i) for i in range(k)])
    return picks
