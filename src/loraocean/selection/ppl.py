"""`ppl`: Rocket's "reasoning perplexity" of each candidate LoRA on K target examples.

PPL = exp(total cross-entropy over the answer tokens / number of answer tokens), pooled over the K
examples; the prompt is masked and no end-of-answer token is added (the same quantity as
`loraocean.evaluation.target_logprobs`). Lowest first.

Speed: the base model is loaded once and each candidate LoRA is put on it in place (merged into
its weights for fp32 bases, else swapped inside one PeftModel; see `selection.swap`). The K
examples are encoded and batched once (left-padded, length-sorted) and only the logits of answer
positions are computed (`logits_to_keep`), so scoring a LoRA costs about one base pass.

Why a scorer of our own beside `loraocean.evaluation.target_logprobs` (same quantity, checked
equal in the tests): it batches once for all candidates and computes the output head only on
answer positions, which the selection-speed target needs.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from loraocean.batching import IGNORE, Encoded, encode, pad_batch
from loraocean.errors import LoraOceanError
from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.selection.swap import open_slot


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor  # the last `keep` labels of each row (IGNORE outside answers)
    keep: int             # answer positions to score at the end of every row


def make_batches(encoded: list[Encoded], pad_id: int, batch_size: int = 8) -> list[tuple[list[int], Batch]]:
    """(example indices, Batch) pairs: examples sorted by length, left-padded so every answer ends
    at the last position, positions counted from each row's first real token."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = pad_batch([encoded[i] for i in idx], pad_id, side="left")
        answer = [sum(1 for x in encoded[i].labels if x != IGNORE) for i in idx]
        # the first token of a sequence has no logit predicting it: keep at most width - 1
        keep = min(max(answer), b["input_ids"].shape[1] - 1)
        # the answer is the tail of each encoded example (labels are IGNORE only on the prompt)
        position_ids = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        out.append((idx, Batch(b["input_ids"], b["attention_mask"], position_ids,
                               b["labels"][:, -keep:], keep)))
    return out


def _accepts_logits_to_keep(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


@torch.no_grad()
def score_batches(model, batches: list[tuple[list[int], Batch]], n: int) -> list[tuple[float, int]]:
    """Per example (sum of answer-token negative log-likelihoods, number of answer tokens)."""
    device = next(model.parameters()).device
    trim = _accepts_logits_to_keep(model)
    out: list[tuple[float, int]] = [(0.0, 0)] * n
    for idx, b in batches:
        kwargs = dict(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                      position_ids=b.position_ids.to(device), use_cache=False)
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
        for row, i in enumerate(idx):
            out[i] = (float(sums[row]), int(counts[row]))
    return out


def answer_nll(model, tokenizer, examples, batch_size: int = 8, template: str = "auto",
               max_length: int = 512) -> list[tuple[float, int]]:
    """Per example (answer-token NLL sum, answer tokens) of `model` on `examples`."""
    encoded = [encode(ex, tokenizer, template, max_length=max_length, add_eos=False)
               for ex in examples]
    return score_batches(model, make_batches(encoded, tokenizer.pad_token_id, batch_size), len(encoded))


def perplexity(scores: list[tuple[float, int]]) -> float:
    total = sum(s for s, _ in scores)
    tokens = sum(n for _, n in scores)
    return math.exp(total / tokens) if tokens else float("nan")


@strategy("ppl")
class Ppl:
    """Lowest answer perplexity of each candidate LoRA on the K target train examples."""

    higher_is_better = False
    uses_target_labels = False

    def __init__(self, batch_size: int = 8, swap: str = "auto"):
        self.batch_size = batch_size
        self.swap = swap  # how candidate LoRAs are put on the base model (selection.swap)

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        if not examples:
            raise LoraOceanError(f"ppl selection for {target_task!r} needs target examples (--shots >= 1)")
        base, tokenizer = model.loaded()
        encoded = [encode(ex, tokenizer, add_eos=False) for ex in examples]
        batches = make_batches(encoded, tokenizer.pad_token_id, self.batch_size)
        tokens = sum(sum(1 for x in e.labels if x != IGNORE) for e in encoded)
        slot = open_slot(base, [e.path for e in candidates], self.swap)
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                scored.append((perplexity(score_batches(slot.model, batches, len(encoded))), entry))
        finally:
            slot.close()
        scored.sort(key=lambda se: (se[0], se[1].task))
        return [Choice(e.task, round(p, 6),
                       f"answer perplexity {p:.3f} on {len(examples)} target examples ({tokens} tokens)",
                       str(e.path)) for p, e in scored]
