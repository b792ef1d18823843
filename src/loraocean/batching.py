"""Turning examples into token ids: the one place where prompt/answer boundaries are decided.

Used by training (answer tokens are the labels, the prompt is masked with -100), by answer-only
perplexity (expert selection) and by likelihood scoring. The split follows lm-evaluation-harness:
encode context+continuation together, encode the context alone, and the continuation is what the
whole has beyond the context (so tokens merging across the boundary are handled the same way).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from loraocean.tasks.example import Example
from loraocean.tasks.prompts import end_of_answer, render

IGNORE = -100
# Text is cut to this many characters per token of the budget before it is tokenized. No token of
# the tokenizers we ship or test spans more (SmolLM2's longest is 81 characters, tests check it),
# so the token cut after it keeps the same tokens; and a huge example (one 100 MB line) never
# reaches the tokenizer, which needs about 200 bytes of memory per character and aborts the
# process (a Rust panic) when it runs out.
CHARS_PER_TOKEN = 128
MAX_TOKENS = 32768  # the budget where a caller gives none ("never cut": still never a 100 MB text)


def clip(text: str, tokens: int | None, keep: str = "end") -> str:
    """`text` cut to `tokens` x CHARS_PER_TOKEN characters (None: MAX_TOKENS), keeping its end (a
    prompt, cut from the left like its tokens) or its start (an answer)."""
    limit = (tokens or MAX_TOKENS) * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    return text[-limit:] if keep == "end" else text[:limit]


def split_encode(tokenizer, context: str, continuation: str,
                 max_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval computes them; trailing whitespace of the context
    (spaces and newlines, lm-eval's `context.rstrip()`) moves to the continuation first. Both are
    `clip`ped to `max_tokens` first (the context keeps its end, the continuation its start)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    context, continuation = clip(context, max_tokens, "end"), clip(continuation, max_tokens, "start")
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    return ctx, whole[len(ctx):]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(example: Example, tokenizer, template: str = "auto", max_length: int | None = 512,
           add_eos: bool = True) -> Encoded:
    """Prompt + target (+ end-of-answer token), labels only on the answer. Over-long prompts are
    cut from the left so the answer always survives (`max_length=None`: never cut, beyond the
    `clip` of a text longer than MAX_TOKENS tokens can be)."""
    r = render(example, tokenizer, template)
    target = r.target + (end_of_answer(tokenizer) if add_eos else "")
    ctx, cont = split_encode(tokenizer, r.prompt, target, max_length)
    if max_length is not None:
        cont = cont[:max_length]
        ctx = ctx[max(0, len(ctx) - (max_length - len(cont))):] if max_length > len(cont) else []
    return Encoded(input_ids=ctx + cont, labels=[IGNORE] * len(ctx) + cont)


def pad_batch(items: list[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels padded to the longest item."""
    width = max(len(it) for it in items)
    ids, mask, labels = [], [], []
    for it in items:
        pad = width - len(it)
        if side == "right":
            ids.append(it.input_ids + [pad_id] * pad)
            mask.append([1] * len(it) + [0] * pad)
            labels.append(it.labels + [IGNORE] * pad)
        else:
            ids.append([pad_id] * pad + it.input_ids)
            mask.append([0] * pad + [1] * len(it))
            labels.append([IGNORE] * pad + it.labels)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels)}


def length_grouped(lengths: list[int], batch_size: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of indices with similar lengths (little padding), in a seeded random order.

    Examples are shuffled, cut into chunks of 50 batches, each chunk sorted by length and cut into
    batches; the batch order is then shuffled. Deterministic for a seed.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches
