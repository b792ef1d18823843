"""`ppl`: Rocket's "reasoning perplexity" of each candidate LoRA on K target examples.

As in Rocket's reference (`Model_Selection/compute_ppl.py`): per example, exp(mean cross-entropy
over the reference output's tokens and the end-of-sequence token that closes it), the prompt
masked; the score is the mean over the K examples. Lowest first. The output is the task's
reference output: the worked solution where the data has one (GSM8K), the answer text elsewhere
(Rocket scored chain-of-thought outputs written for its K shots; tasks without a rationale have
none to score). `pooled=True, eos=False` gives the earlier form: exp(total cross-entropy over the
answer tokens / their number), pooled over the K examples, no end token (`answer_nll`'s
`perplexity`, also behind `target_logprobs`).

Speed: the base model is loaded once and each candidate LoRA is put on it in place (merged into
its weights for fp32 bases, else swapped inside one PeftModel; see `selection.swap`). The K
examples are encoded and batched once for all candidates (`answer_nll.prepare`); per candidate the
shared prompt prefix runs once and only answer positions reach the output head, so scoring a LoRA
costs at most one base pass.
"""

from __future__ import annotations

import math

from loraocean.batching import IGNORE, encode
from loraocean.errors import LoraOceanError
from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.evaluation.answer_nll import perplexity, prepare, score
from loraocean.evaluation.choice import pad_id_of
from loraocean.selection.swap import open_slot


@strategy("ppl", needs=("examples", "library"), order=40)
class Ppl:
    """Lowest reasoning perplexity of each candidate LoRA on the K target train examples."""

    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return scoring * shots / 1.5  # answer-only scoring of the shots, shorter than a whole example

    higher_is_better = False

    def __init__(self, batch_size: int = 8, swap: str = "auto", share_prefix: bool = True,
                 eos: bool = True, pooled: bool = False):
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.swap = swap  # how candidate LoRAs are put on the base model (selection.swap)
        self.eos = eos          # score the end-of-sequence token after the output (the reference)
        self.pooled = pooled    # one perplexity over all tokens instead of the mean of per-example ones

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        if not examples:
            raise LoraOceanError(f"ppl selection for {target_task!r} needs target examples (--shots >= 1)")
        base, tokenizer = model.loaded()
        prepared, tokens = prepare_examples(examples, tokenizer, self.batch_size, self.share_prefix, self.eos)
        slot = open_slot(base, [e.path for e in candidates], self.swap)
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                scored.append((reasoning_perplexity(score(slot.model, prepared), self.pooled), entry))
        finally:
            slot.close()
        scored.sort(key=lambda se: (se[0], se[1].task))
        what = "pooled answer perplexity" if self.pooled else "reasoning perplexity (mean over examples)"
        return [Choice(e.task, round(p, 6),
                       f"{what} {p:.3f} on {len(examples)} target examples ({tokens} tokens)",
                       str(e.path)) for p, e in scored]


def reasoning_perplexity(scores: list[tuple[float, int]], pooled: bool = False) -> float:
    """The mean over examples of exp(mean cross-entropy of each example's scored tokens) (Rocket's
    reference), or with `pooled` exp(total cross-entropy / total tokens)."""
    if pooled:
        return perplexity(scores)
    per_example = [math.exp(s / n) for s, n in scores if n]
    return sum(per_example) / len(per_example) if per_example else float("nan")


def prepare_examples(examples: list, tokenizer, batch_size: int, share_prefix: bool, eos: bool = True):
    """The target examples encoded and batched for `score` (with the end-of-sequence token after
    each output when `eos`), and their number of scored tokens."""
    encoded = [encode(ex, tokenizer, add_eos=eos) for ex in examples]
    tokens = sum(sum(1 for x in e.labels if x != IGNORE) for e in encoded)
    return prepare(encoded, pad_id_of(tokenizer), batch_size, share_prefix), tokens
