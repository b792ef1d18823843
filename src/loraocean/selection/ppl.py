"""`ppl`: Rocket's "reasoning perplexity" of each candidate LoRA on K target examples.

PPL = exp(total cross-entropy over the answer tokens / number of answer tokens), pooled over the K
examples; the prompt is masked and no end-of-answer token is added (the evaluation room's
`answer_nll`, also behind `target_logprobs`). Lowest first.

Speed: the base model is loaded once and each candidate LoRA is put on it in place (merged into
its weights for fp32 bases, else swapped inside one PeftModel; see `selection.swap`). The K
examples are encoded and batched once for all candidates (`answer_nll.prepare`); per candidate the
shared prompt prefix runs once and only answer positions reach the output head, so scoring a LoRA
costs at most one base pass.
"""

from __future__ import annotations

from loraocean.batching import IGNORE, encode
from loraocean.errors import LoraOceanError
from loraocean.selection.base import Choice, ModelRef, strategy
from loraocean.evaluation.answer_nll import perplexity, prepare, score
from loraocean.evaluation.choice import pad_id_of
from loraocean.selection.swap import open_slot


@strategy("ppl", needs=("examples", "library"), order=40)
class Ppl:
    """Lowest answer perplexity of each candidate LoRA on the K target train examples."""

    @staticmethod
    def estimate_seconds(scoring: float, shots: int) -> float:
        return scoring * shots / 1.5  # answer-only scoring of the shots, shorter than a whole example

    higher_is_better = False

    def __init__(self, batch_size: int = 8, swap: str = "auto", share_prefix: bool = True):
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.swap = swap  # how candidate LoRAs are put on the base model (selection.swap)

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        if not examples:
            raise LoraOceanError(f"ppl selection for {target_task!r} needs target examples (--shots >= 1)")
        base, tokenizer = model.loaded()
        prepared, tokens = prepare_examples(examples, tokenizer, self.batch_size, self.share_prefix)
        slot = open_slot(base, [e.path for e in candidates], self.swap)
        scored = []
        try:
            for entry in candidates:
                slot.load(entry.path)
                scored.append((perplexity(score(slot.model, prepared)), entry))
        finally:
            slot.close()
        scored.sort(key=lambda se: (se[0], se[1].task))
        return [Choice(e.task, round(p, 6),
                       f"answer perplexity {p:.3f} on {len(examples)} target examples ({tokens} tokens)",
                       str(e.path)) for p, e in scored]


def prepare_examples(examples: list, tokenizer, batch_size: int, share_prefix: bool):
    """The target examples encoded and batched for `score`, and their number of answer tokens."""
    encoded = [encode(ex, tokenizer, add_eos=False) for ex in examples]
    tokens = sum(sum(1 for x in e.labels if x != IGNORE) for e in encoded)
    return prepare(encoded, pad_id_of(tokenizer), batch_size, share_prefix), tokens
